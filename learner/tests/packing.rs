//! Packed rows (several documents per row, attention kept inside each) train exactly as the
//! same documents padded one per row: same loss, same gradients, same weights.

mod common;

use rlvr_core::{TrainBatch, IGNORE};
use rlvr_learner::{Learner, Objective, Reduction};

fn learner() -> Learner {
    common::learner_of(&common::tiny(2, 40, false), 3e-3, 11)
}

/// Documents of different lengths; some with a masked prompt (SFT-like), some learned whole.
fn documents() -> Vec<(Vec<i64>, Vec<i64>)> {
    [7usize, 12, 5, 9, 3, 14]
        .iter()
        .enumerate()
        .map(|(d, &len)| {
            let ids: Vec<i64> = (0..len).map(|i| ((d * 13 + i * 7 + 1) % 39 + 1) as i64).collect();
            let labels = ids
                .iter()
                .enumerate()
                .map(|(i, &t)| if d % 2 == 1 && i < 3 { IGNORE } else { t })
                .collect();
            (ids, labels)
        })
        .collect()
}

#[test]
fn packed_rows_compute_what_padded_rows_compute() {
    let docs = documents();
    let padded = TrainBatch::from_examples(&docs, 0);
    // Rows of 24: [7, 12, 5] and [9, 3] and [14], with padding after.
    let rows: Vec<Vec<&(Vec<i64>, Vec<i64>)>> = vec![
        vec![&docs[0], &docs[1], &docs[2]],
        vec![&docs[3], &docs[4]],
        vec![&docs[5]],
    ];
    let packed = TrainBatch::from_packed(&rows, 24, 0);
    assert_eq!((packed.rows, packed.cols), (3, 24));
    assert_eq!(
        packed.loss_tokens(),
        padded.loss_tokens(),
        "the same tokens are predicted"
    );
    let p = packed.packing.as_ref().unwrap();
    assert_eq!(
        &p.position_ids[..24],
        &[(0..7).collect::<Vec<i64>>(), (0..12).collect(), (0..5).collect()].concat()[..]
    );
    assert_eq!(p.document_ids[23], 2);
    assert_eq!(p.document_ids[24 + 12], 2, "padding is a document of its own");

    let objective = Objective::Lm(Reduction::Mean);
    // Packed, and packed with gradient checkpointing (the layer-by-layer backward).
    let (mut a, mut b, mut c) = (learner(), learner(), learner());
    c.set_gradient_checkpointing(true);
    for step in 0..3 {
        let la = a.train_step(std::slice::from_ref(&padded), objective).unwrap();
        for (name, l) in [("packed", &mut b), ("checkpointed", &mut c)] {
            let m = l.train_step(std::slice::from_ref(&packed), objective).unwrap();
            assert!(
                (la.loss - m.loss).abs() < 1e-5,
                "{name} step {step}: {} vs {}",
                la.loss,
                m.loss
            );
            assert!(
                (la.grad_norm - m.grad_norm).abs() < 1e-4,
                "{name} step {step}: grad norm {} vs {}",
                la.grad_norm,
                m.grad_norm
            );
        }
    }
    let want = a.export_weights(0).unwrap();
    for l in [&b, &c] {
        common::assert_same_weights(&l.export_weights(0).unwrap(), &want, 1e-5, "packed");
    }
    // Without the document mask, the same packed tokens give another loss: the test can fail.
    let mut leaky = packed.clone();
    leaky.packing = None;
    let fresh = learner();
    let l_packed = fresh.eval_loss(&packed, objective).unwrap();
    let l_leaky = fresh.eval_loss(&leaky, objective).unwrap();
    assert!((l_packed - l_leaky).abs() > 1e-4, "{l_packed} vs {l_leaky}");
}
