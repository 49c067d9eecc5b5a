//! Gloo process groups on 127.0.0.1: each rank is a thread with its own group, talking through
//! a real TCPStore and real gloo TCP pairs.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use rlvr_dist::{Backend, DistError, ProcessGroup, ReceivedTensors, ReduceOp, Rendezvous};
use tch::{Device, Kind, Tensor};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Run `f(group)` on `world` thread ranks; each rank's result, in rank order.
fn on_ranks<T: Send>(world: usize, f: impl Fn(ProcessGroup) -> T + Sync) -> Vec<T> {
    rlvr_dist::on_thread_ranks(world, f).expect("join the group")
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).view([-1])).expect("f32 values")
}

#[test]
fn collectives_on_three_ranks() {
    let results = on_ranks(3, |g| {
        let r = g.rank() as f32;
        // all_reduce: sum, max, min of [r, 10r].
        let mut sum = Tensor::from_slice(&[r, 10.0 * r]);
        g.all_reduce(&mut sum, ReduceOp::Sum).unwrap();
        let mut max = Tensor::from_slice(&[r, -r]);
        g.all_reduce(&mut max, ReduceOp::Max).unwrap();
        let mut min = Tensor::from_slice(&[r, -r]);
        g.all_reduce(&mut min, ReduceOp::Min).unwrap();
        // broadcast from rank 2.
        let mut b = Tensor::full([4], f64::from(r), (Kind::Float, Device::Cpu));
        g.broadcast(&mut b, 2).unwrap();
        // all_gather of two values per rank, as a ZeRO-3 shard gather.
        let shard = Tensor::from_slice(&[r, r + 0.5]);
        let mut whole = Tensor::zeros([6], (Kind::Float, Device::Cpu));
        g.all_gather(&mut whole, &shard).unwrap();
        // reduce_scatter of 6 values: rank k gets the sum over ranks of slice k.
        let grads = Tensor::arange(6, (Kind::Float, Device::Cpu)) * f64::from(r + 1.0);
        let mut mine = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        g.reduce_scatter(&mut mine, &grads, ReduceOp::Sum).unwrap();
        // bf16 travels too.
        let mut half = Tensor::from_slice(&[r + 1.0]).to_kind(Kind::BFloat16);
        g.all_reduce(&mut half, ReduceOp::Sum).unwrap();
        g.barrier().unwrap();
        [
            values(&sum),
            values(&max),
            values(&min),
            values(&b),
            values(&whole),
            values(&mine),
            values(&half),
        ]
    });
    for (rank, [sum, max, min, b, whole, mine, half]) in results.into_iter().enumerate() {
        assert_eq!(sum, [3.0, 30.0]);
        assert_eq!(max, [2.0, 0.0]);
        assert_eq!(min, [0.0, -2.0]);
        assert_eq!(b, [2.0; 4]);
        assert_eq!(whole, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        // Σ_r (r+1)·[2k, 2k+1] = 6·[2k, 2k+1].
        let k = rank as f32;
        assert_eq!(mine, [12.0 * k, 12.0 * k + 6.0], "rank {rank}");
        assert_eq!(half, [6.0]);
    }
}

#[test]
fn mismatched_tensors_are_errors_before_any_communication() {
    let results = on_ranks(2, |g| {
        let shard = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let mut wrong = Tensor::zeros([5], (Kind::Float, Device::Cpu));
        let gather = g.all_gather(&mut wrong, &shard).unwrap_err().to_string();
        let mut other_kind = Tensor::zeros([6], (Kind::Double, Device::Cpu));
        let kind = g.all_gather(&mut other_kind, &shard).unwrap_err().to_string();
        let mut strided = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu)).tr();
        let strided = g.all_reduce(&mut strided, ReduceOp::Sum).unwrap_err().to_string();
        let mut t = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let root = g.broadcast(&mut t, 7).unwrap_err().to_string();
        // The group still works afterwards.
        g.all_reduce(&mut t, ReduceOp::Sum).unwrap();
        (gather, kind, strided, root)
    });
    let (gather, kind, strided, root) = &results[0];
    assert!(gather.contains("world size (2) x 3"), "{gather}");
    assert!(kind.contains("Double"), "{kind}");
    assert!(strided.contains("not contiguous"), "{strided}");
    assert!(root.contains("root 7 outside a world of 2"), "{root}");
}

#[test]
fn a_missing_peer_is_a_timeout_error_not_a_hang() {
    // Rank 1 of 2 with nobody serving the store: the rendezvous gives up after its timeout.
    let rdv = Rendezvous {
        host: "127.0.0.1".into(),
        port: free_port(),
        rank: 1,
        world_size: 2,
        local_rank: 1,
    };
    let start = Instant::now();
    let err = ProcessGroup::new(&rdv, Backend::Gloo, "lonely", Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, DistError::C10d(_)), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
}

#[test]
fn torchrun_variables_are_read_and_checked() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let rdv = Rendezvous::from_vars(vars(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "node0"),
        ("MASTER_PORT", "29500"),
    ]))
    .unwrap();
    assert_eq!(
        (rdv.rank, rdv.world_size, rdv.local_rank, rdv.port),
        (3, 4, 1, 29500)
    );
    assert_eq!(rdv.host, "node0");
    let no_local = Rendezvous::from_vars(vars(&[
        ("RANK", "2"),
        ("WORLD_SIZE", "4"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "1"),
    ]))
    .unwrap();
    assert_eq!(no_local.local_rank, 2);
    let err = Rendezvous::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "two")])).unwrap_err();
    assert!(err.to_string().contains("WORLD_SIZE: `two`"), "{err}");
    let err = Rendezvous::from_vars(vars(&[
        ("RANK", "4"),
        ("WORLD_SIZE", "4"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "1"),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("rank 4 outside a world of 4"), "{err}");
    let err = Rendezvous::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "1")])).unwrap_err();
    assert!(err.to_string().contains("MASTER_ADDR: not set"), "{err}");
    assert!(Backend::Gloo.available());
    assert_eq!(Backend::for_device(Device::Cpu), Backend::Gloo);
}

#[test]
fn weights_reach_every_rank_in_buckets_whole_and_in_order() {
    use rlvr_core::{DType, WeightChunk};
    use rlvr_dist::WeightSync;
    // Mixed element types and shapes, odd sizes, so chunks straddle bucket boundaries.
    let chunks: Vec<WeightChunk> = [
        ("model.embed_tokens.weight", DType::F32, vec![37, 5]),
        ("model.layers.0.self_attn.q_proj.weight", DType::Bf16, vec![9, 11]),
        ("model.norm.weight", DType::F16, vec![13]),
        ("model.empty", DType::F32, vec![0]),
        ("lm_head.weight", DType::F32, vec![3, 7, 2]),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, dtype, shape))| {
        let bytes = shape.iter().product::<i64>() as usize * dtype.size();
        WeightChunk {
            name: name.to_string(),
            dtype,
            shape,
            data: (0..bytes).map(|b| (b * 31 + i * 7) as u8).collect(),
            version: 42,
        }
    })
    .collect();
    let total: usize = chunks.iter().map(|c| c.data.len()).sum();
    let results = on_ranks(3, |group| {
        let sync = WeightSync::new(&group, 0, 100, Device::Cpu);
        if group.rank() == 0 {
            let stats = sync.send(&chunks).unwrap();
            (chunks.clone(), stats)
        } else {
            sync.receive().unwrap()
        }
    });
    for (rank, (got, stats)) in results.iter().enumerate() {
        assert_eq!(got, &chunks, "rank {rank}");
        assert_eq!(stats.bytes as usize, total);
        assert_eq!(
            stats.buckets as usize,
            total.div_ceil(100),
            "one broadcast per bucket"
        );
    }
}

/// Mixed element types and odd sizes (so members need aligned offsets inside a bucket of 100
/// bytes), one tensor larger than a bucket (broadcast from its own memory), one empty, one
/// strided.
fn mixed_tensors() -> Vec<(String, Tensor)> {
    let opts = (Kind::Float, Device::Cpu);
    vec![
        (
            "a.bf16".to_string(),
            Tensor::arange(7, opts).to_kind(Kind::BFloat16),
        ),
        ("b.f32".to_string(), Tensor::arange(15, opts).view([3, 5]) * 0.5),
        ("c.big".to_string(), Tensor::arange(200, opts).view([10, 20])),
        ("d.empty".to_string(), Tensor::zeros([0, 4], opts)),
        (
            "e.f16".to_string(),
            (Tensor::arange(9, opts) - 4.0).to_kind(Kind::Half),
        ),
        (
            "f.strided".to_string(),
            Tensor::arange(12, opts).view([3, 4]).transpose(0, 1),
        ),
    ]
}

fn table_of(tensors: &[(String, Tensor)]) -> Vec<(String, Kind, Vec<i64>)> {
    tensors
        .iter()
        .map(|(name, t)| (name.clone(), t.kind(), t.size()))
        .collect()
}

/// What the root reports of a sync, in the receivers' shape.
fn sent(version: u64, stats: rlvr_dist::SyncStats) -> ReceivedTensors {
    ReceivedTensors {
        tensors: Vec::new(),
        version,
        stats,
    }
}

/// Every receiver got [`mixed_tensors`] as policy `version`, in three broadcasts.
fn assert_received_mixed(results: &[ReceivedTensors], version: u64) {
    let want = mixed_tensors();
    let bytes: u64 = want
        .iter()
        .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
        .sum();
    // 14 + 60 bytes share a bucket, 800 travel alone, 18 + 48 share the last one.
    assert!(results
        .iter()
        .all(|r| r.stats.bytes == bytes && r.stats.buckets == 3));
    for (rank, got) in results.iter().enumerate().skip(1) {
        assert_eq!(got.version, version, "rank {rank}");
        assert_eq!(got.tensors.len(), want.len());
        for ((name, t), (want_name, w)) in got.tensors.iter().zip(&want) {
            assert_eq!(name, want_name);
            assert_eq!((t.kind(), t.size()), (w.kind(), w.size()), "{name}");
            assert!(t.equal(w), "{name} on rank {rank}");
        }
    }
}

#[test]
fn device_resident_weights_arrive_as_tensors_equal_to_the_root_s() {
    use rlvr_dist::WeightSync;
    let results = on_ranks(3, |group| {
        let sync = WeightSync::new(&group, 0, 100, Device::Cpu);
        if group.rank() == 0 {
            let stats = sync.send_tensors(&mixed_tensors(), 7).unwrap();
            sent(7, stats)
        } else {
            sync.receive_tensors(Device::Cpu).unwrap()
        }
    });
    assert_received_mixed(&results, 7);
}

/// A sender that makes each tensor just before it goes (as a ZeRO-3 learner gathers a unit)
/// and reuses its memory after (here: overwrites it): the receivers get what `send_tensors`
/// would have sent.
#[test]
fn a_stream_of_tensors_made_one_at_a_time_arrives_as_sent_all_at_once() {
    use rlvr_dist::WeightSync;
    let results = on_ranks(3, |group| {
        let sync = WeightSync::new(&group, 0, 100, Device::Cpu);
        if group.rank() == 0 {
            let table = table_of(&mixed_tensors());
            let mut stream = sync.stream(&table, 9).unwrap();
            for i in 0..table.len() {
                let (name, t) = mixed_tensors().swap_remove(i);
                stream.push(&name, &t).unwrap();
                let _ = t.shallow_clone().fill_(-1.0);
            }
            sent(9, stream.finish().unwrap())
        } else {
            sync.receive_tensors(Device::Cpu).unwrap()
        }
    });
    assert_received_mixed(&results, 9);
}

/// A packed version is a snapshot (later changes to the tensors it was packed from, the one
/// larger than a bucket included, do not reach it), its tensors are views equal to the
/// originals, and it arrives as sent all at once, in the same buckets; a sync with another
/// bucket size refuses it.
#[test]
fn a_packed_version_is_a_snapshot_that_arrives_as_sent_all_at_once() {
    use rlvr_dist::{WeightPacker, WeightSync};
    let results = on_ranks(3, |group| {
        let sync = WeightSync::new(&group, 0, 100, Device::Cpu);
        if group.rank() != 0 {
            return sync.receive_tensors(Device::Cpu).unwrap();
        }
        let tensors = mixed_tensors();
        let mut packer = WeightPacker::new(&table_of(&tensors), 11, 100, Device::Cpu).unwrap();
        for (name, t) in &tensors {
            packer.push(name, t).unwrap();
        }
        let packed = packer.finish().unwrap();
        for (_, t) in &tensors {
            let _ = t.shallow_clone().fill_(-1.0);
        }
        for ((name, got), (_, want)) in packed.tensors().iter().zip(mixed_tensors()) {
            assert_eq!((got.kind(), got.size()), (want.kind(), want.size()), "{name}");
            assert!(got.equal(&want), "{name} changed with its source");
        }
        let refused = WeightSync::new(&group, 0, 200, Device::Cpu)
            .send_packed(&packed)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("buckets of 100 bytes"), "{refused}");
        sent(11, sync.send_packed(&packed).unwrap())
    });
    assert_received_mixed(&results, 11);
}

/// A stream takes its table's tensors in order, each as the table describes it, and all of
/// them.
#[test]
fn a_stream_refuses_tensors_out_of_its_table_and_an_early_finish() {
    use rlvr_dist::WeightSync;
    let errors = on_ranks(1, |group| {
        let sync = WeightSync::new(&group, 0, 100, Device::Cpu);
        let tensors = mixed_tensors();
        let table = table_of(&tensors);
        let mut stream = sync.stream(&table, 1).unwrap();
        let skipped = stream.push(&tensors[1].0, &tensors[1].1).unwrap_err();
        let mut stream = sync.stream(&table, 1).unwrap();
        let retyped = stream.push(&tensors[0].0, &tensors[1].1).unwrap_err();
        stream.push(&tensors[0].0, &tensors[0].1).unwrap();
        let early = stream.finish().unwrap_err();
        [skipped, retyped, early].map(|e| e.to_string())
    });
    let [skipped, retyped, early] = &errors[0];
    assert!(
        skipped.contains("`b.f32`") && skipped.contains("the table has `a.bf16`"),
        "{skipped}"
    );
    assert!(
        retyped.contains("the table has `a.bf16` (Bf16, [7])"),
        "{retyped}"
    );
    assert!(
        early.contains("ended before `b.f32` (1 of 6 tensors given)"),
        "{early}"
    );
}

#[test]
fn a_sibling_group_lives_beside_its_parent_on_the_same_store() {
    let results = on_ranks(2, |g| {
        let side = g
            .gloo_sibling("127.0.0.1", "side", Duration::from_secs(30))
            .unwrap();
        // Both groups work, interleaved, each with its own collectives.
        let mut a = Tensor::from_slice(&[g.rank() as f32 + 1.0]);
        g.all_reduce(&mut a, ReduceOp::Sum).unwrap();
        let mut b = Tensor::from_slice(&[10.0 * (side.rank() as f32 + 1.0)]);
        side.broadcast(&mut b, 1).unwrap();
        g.all_reduce(&mut a, ReduceOp::Sum).unwrap();
        (a.double_value(&[0]), b.double_value(&[0]), side.world_size())
    });
    for (a, b, world) in results {
        assert_eq!((a, b, world), (6.0, 20.0, 2));
    }
}

#[test]
fn rows_of_different_lengths_come_back_from_every_rank_in_rank_order() {
    // Rank r brings r + 1 rows (rank 2 none), row i holding i + r values r*100 + i..
    let rows_of = |rank: usize| -> Vec<Vec<f32>> {
        let count = if rank == 2 { 0 } else { rank + 1 };
        (0..count)
            .map(|i| (0..i + rank).map(|j| (rank * 100 + i * 10 + j) as f32).collect())
            .collect()
    };
    let results = on_ranks(3, |g| g.all_gather_rows(&rows_of(g.rank()), Device::Cpu).unwrap());
    let want: Vec<Vec<f32>> = (0..3).flat_map(rows_of).collect();
    assert_eq!(want.len(), 3);
    assert!(want.iter().any(Vec::is_empty) && want.iter().any(|r| r.len() == 2));
    for got in results {
        assert_eq!(got, want);
    }
}
