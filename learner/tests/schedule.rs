//! Schedules against transformers' lambdas, written out by hand for a few steps.

use rlvr_learner::schedule::{Schedule, Shape};

fn s(shape: Shape) -> Schedule {
    Schedule {
        peak: 1.0,
        warmup_steps: 10,
        total_steps: 110,
        shape,
    }
}

#[test]
fn warmup_is_linear_from_zero() {
    for shape in [
        Shape::Linear,
        Shape::Cosine,
        Shape::Constant,
        Shape::Wsd { decay_steps: 20 },
    ] {
        assert_eq!(s(shape).lr(0), 0.0);
        assert!((s(shape).lr(5) - 0.5).abs() < 1e-12);
        assert!((s(shape).lr(10) - 1.0).abs() < 1e-12);
    }
}

#[test]
fn linear_cosine_and_wsd_decay() {
    // get_linear_schedule_with_warmup: (total - step) / (total - warmup).
    assert!((s(Shape::Linear).lr(60) - 0.5).abs() < 1e-12);
    assert_eq!(s(Shape::Linear).lr(110), 0.0);
    // get_cosine_schedule_with_warmup: 0.5 (1 + cos(pi progress)).
    assert!((s(Shape::Cosine).lr(60) - 0.5).abs() < 1e-12);
    assert!((s(Shape::Cosine).lr(35) - 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos())).abs() < 1e-12);
    // WSD: flat until the last 20 steps, then linear to zero.
    let w = s(Shape::Wsd { decay_steps: 20 });
    assert_eq!(w.lr(89), 1.0);
    assert_eq!(w.lr(90), 1.0);
    assert!((w.lr(100) - 0.5).abs() < 1e-12);
    assert_eq!(w.lr(110), 0.0);
    assert_eq!(s(Shape::Constant).lr(109), 1.0);
}
