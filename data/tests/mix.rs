//! Data files (JSON lines, JSON, Parquet), the hub cache, and the mixer's open-instruct
//! semantics.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use rlvr_data::mix::{self, BadRows, Entry, MixOptions, Take};
use rlvr_data::{split_files, At, Builtin, DataError, Hub, RowFile};
use serde_json::{json, Value};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlvr-mix-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// SFT-shaped rows: a `messages` list of `{role, content}`, a `source` string (sometimes
/// null) and an integer `level`.
fn sft_rows(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut messages = vec![json!({"role": "user", "content": format!("question {i}, ünïcode ✓")})];
            for turn in 0..i % 3 {
                messages.push(json!({"role": "assistant", "content": format!("answer {i}.{turn}")}));
            }
            let source = if i % 4 == 0 {
                Value::Null
            } else {
                json!(format!("src-{}", i % 5))
            };
            json!({"messages": messages, "source": source, "level": i as i64 - 3})
        })
        .collect()
}

/// Write `rows` (as [`sft_rows`] makes them) to a Parquet file the way pyarrow lays out
/// `list<struct<role, content>>`: the three-level LIST encoding, with repetition and
/// definition levels; `per_group` rows per row group.
fn write_parquet(path: &Path, rows: &[Value], per_group: usize, compression: Compression) {
    let schema = parse_message_type(
        "message schema {
            OPTIONAL group messages (LIST) {
                REPEATED group list {
                    OPTIONAL group element {
                        OPTIONAL BYTE_ARRAY role (UTF8);
                        OPTIONAL BYTE_ARRAY content (UTF8);
                    }
                }
            }
            OPTIONAL BYTE_ARRAY source (UTF8);
            OPTIONAL INT64 level;
        }",
    )
    .unwrap();
    let props = WriterProperties::builder().set_compression(compression).build();
    let mut writer =
        SerializedFileWriter::new(File::create(path).unwrap(), Arc::new(schema), Arc::new(props)).unwrap();
    for group in rows.chunks(per_group) {
        let mut rg = writer.next_row_group().unwrap();
        for field in ["role", "content"] {
            let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
            for row in group {
                for (k, m) in row["messages"].as_array().unwrap().iter().enumerate() {
                    values.push(ByteArray::from(m[field].as_str().unwrap()));
                    def.push(4);
                    rep.push(if k == 0 { 0 } else { 1 });
                }
            }
            let mut col = rg.next_column().unwrap().unwrap();
            col.typed::<ByteArrayType>()
                .write_batch(&values, Some(&def), Some(&rep))
                .unwrap();
            col.close().unwrap();
        }
        let sources: Vec<ByteArray> = group
            .iter()
            .filter_map(|r| r["source"].as_str())
            .map(ByteArray::from)
            .collect();
        let def: Vec<i16> = group.iter().map(|r| i16::from(!r["source"].is_null())).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&sources, Some(&def), None)
            .unwrap();
        col.close().unwrap();
        let levels: Vec<i64> = group.iter().map(|r| r["level"].as_i64().unwrap()).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&levels, Some(&vec![1; group.len()]), None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    writer.close().unwrap();
}

fn write_jsonl(path: &Path, rows: &[Value]) {
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, body).unwrap();
}

fn identity(v: &Value, _: At<'_>) -> Result<Option<Value>, DataError> {
    Ok(Some(v.clone()))
}

fn no_generated(_: Builtin, _: u64, _: rlvr_data::arith::Split) -> Result<Option<Value>, DataError> {
    Ok(None)
}

fn options(hub: Hub) -> MixOptions {
    MixOptions {
        seed: 3,
        bad_rows: BadRows::Fail,
        hub,
    }
}

fn offline_hub(cache: &Path) -> Hub {
    let cache = cache.display().to_string();
    Hub::from_vars(|k| match k {
        "HF_HUB_CACHE" => Some(cache.clone()),
        "HF_HUB_OFFLINE" => Some("1".into()),
        _ => None,
    })
}

fn entry(dataset: &Path, take: Take, split: &str) -> Entry {
    Entry {
        dataset: dataset.display().to_string(),
        take,
        split: split.into(),
        revision: None,
    }
}

#[test]
fn a_parquet_file_written_here_reads_back_identically_in_any_order() {
    let dir = scratch("parquet");
    let rows = sft_rows(50);
    for (name, compression) in [
        ("snappy.parquet", Compression::SNAPPY),
        ("zstd.parquet", Compression::ZSTD(Default::default())),
        ("plain.parquet", Compression::UNCOMPRESSED),
    ] {
        let path = dir.join(name);
        write_parquet(&path, &rows, 16, compression);
        let file = RowFile::open(&path).unwrap();
        assert_eq!(file.len(), 50, "{name}");
        let all: Vec<usize> = (0..50).collect();
        let back: Vec<Value> = file
            .rows(&all)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v.unwrap())
            .collect();
        assert_eq!(back, rows, "{name}");
        // Rows from several row groups, out of order and repeated, come back as asked.
        let some = [49, 3, 17, 3, 0, 32];
        let got: Vec<(usize, Value)> = file
            .rows(&some)
            .unwrap()
            .into_iter()
            .map(|(r, v)| (r, v.unwrap()))
            .collect();
        for (&i, (row, value)) in some.iter().zip(got) {
            assert_eq!((row, &value), (i + 1, &rows[i]));
        }
    }
    // The same rows as JSON lines and as a JSON array read the same.
    write_jsonl(&dir.join("rows.jsonl"), &rows);
    std::fs::write(dir.join("rows.json"), serde_json::to_string(&rows).unwrap()).unwrap();
    for name in ["rows.jsonl", "rows.json"] {
        let file = RowFile::open(&dir.join(name)).unwrap();
        let all: Vec<usize> = (0..file.len()).collect();
        let back: Vec<Value> = file
            .rows(&all)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v.unwrap())
            .collect();
        assert_eq!(back, rows, "{name}");
    }
    // Not Parquet, or an unknown type: the file is named.
    std::fs::write(dir.join("broken.parquet"), b"PAR1 not really").unwrap();
    let err = RowFile::open(&dir.join("broken.parquet"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.parquet") && err.contains("Parquet"), "{err}");
    let err = RowFile::open(&dir.join("rows.csv")).unwrap_err().to_string();
    assert!(err.contains("unknown data file type `.csv`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn selection_repeats_whole_passes_then_samples_without_replacement() {
    // Below the size: distinct rows, reproducible by seed.
    let few = mix::select(10, 4, 1);
    assert_eq!(few.len(), 4);
    assert_eq!(few.iter().collect::<std::collections::HashSet<_>>().len(), 4);
    assert_eq!(few, mix::select(10, 4, 1));
    assert_ne!(few, mix::select(10, 4, 2));
    // Above: every row twice in order, then 5 distinct extras.
    let many = mix::select(10, 25, 1);
    assert_eq!(&many[..20], &(0..10).chain(0..10).collect::<Vec<_>>()[..]);
    assert_eq!(
        many[20..].iter().collect::<std::collections::HashSet<_>>().len(),
        5
    );
    assert_eq!(mix::select(10, 10, 9), (0..10).collect::<Vec<_>>());
    assert!(mix::select(0, 5, 1).is_empty());
}

#[test]
fn a_mix_takes_counts_and_fractions_from_files_directories_and_built_in_sets() {
    let dir = scratch("mixer");
    let rows = sft_rows(40);
    let jsonl = dir.join("a.jsonl");
    write_jsonl(&jsonl, &rows[..10]);
    // A hub-style directory: split files by name.
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("data")).unwrap();
    write_parquet(
        &repo.join("data/train-00000-of-00002.parquet"),
        &rows[10..25],
        8,
        Compression::SNAPPY,
    );
    write_parquet(
        &repo.join("data/train-00001-of-00002.parquet"),
        &rows[25..35],
        8,
        Compression::SNAPPY,
    );
    write_parquet(
        &repo.join("data/test-00000-of-00001.parquet"),
        &rows[35..],
        8,
        Compression::SNAPPY,
    );
    let entries = vec![
        entry(&jsonl, Take::Count(25), "train"),
        entry(&repo, Take::Fraction(0.5), "train"),
        entry(&repo, Take::Fraction(1.0), "test"),
        Entry {
            dataset: "builtin:arith".into(),
            take: Take::Count(3),
            split: "test".into(),
            revision: None,
        },
    ];
    let generated =
        |b: Builtin, i: u64, split| Ok(b.example(7, i, split).map(|e| json!({"generated": e.completion})));
    let mixed = mix::load(&entries, &options(offline_hub(&dir)), generated, identity).unwrap();
    let r = &mixed.report;
    let taken: Vec<u64> = r.entries.iter().map(|e| e.taken).collect();
    assert_eq!(
        taken,
        [25, 12, 5, 3],
        "count, floor(0.5 x 25), all 5 test rows, 3 generated"
    );
    assert_eq!(mixed.rows.len(), 45);
    assert_eq!(r.entries[0].available, Some(10));
    assert_eq!(r.entries[1].files.len(), 2, "both train shards, not the test one");
    assert!(r.entries[2].files[0].ends_with("test-00000-of-00001.parquet"));
    // Upsampled: every row of a.jsonl twice, then five distinct ones.
    for row in &rows[..10] {
        let n = mixed.rows[..25].iter().filter(|r| *r == row).count();
        assert!(n == 2 || n == 3, "{n}");
    }
    // Entries in order: the directory's rows come from rows 10..35, the test split's 35..40.
    assert!(mixed.rows[25..37].iter().all(|r| rows[10..35].contains(r)));
    assert_eq!(&mixed.rows[37..42], &rows[35..]);
    assert!(mixed.rows[42..].iter().all(|r| r.get("generated").is_some()));
    // The same mix resolves to the same rows; the report is a record and a log.
    let again = mix::load(&entries, &options(offline_hub(&dir)), generated, identity).unwrap();
    assert_eq!(again.rows, mixed.rows);
    let lines = r.lines();
    assert!(
        lines[0].contains("(local, 10 rows): 25 rows (upsampled x2.50)"),
        "{}",
        lines[0]
    );
    let record = serde_json::to_value(r).unwrap();
    assert_eq!(record["rows"], 45);
    // A generated data set needs a count; a name that is nothing is refused.
    let bad = [Entry {
        take: Take::Fraction(0.5),
        ..entries[3].clone()
    }];
    let err = mix::load(&bad, &options(offline_hub(&dir)), generated, identity)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("give a row count"), "{err}");
    let nothing = [entry(Path::new("./no/such/file.jsonl"), Take::Count(1), "train")];
    let err = mix::load(&nothing, &options(offline_hub(&dir)), no_generated, identity)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("neither a file, a directory, nor a hub data set id"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_rows_stop_the_load_naming_file_and_line_or_are_skipped_and_counted() {
    let dir = scratch("bad");
    let path = dir.join("rows.jsonl");
    std::fs::write(
        &path,
        "{\"text\": \"a\"}\n{\"text\": 3}\nnot json\n{\"text\": \"b\"}\n",
    )
    .unwrap();
    let read = |v: &Value, at: At<'_>| match v.get("text").and_then(Value::as_str) {
        Some(t) => Ok(Some(t.to_string())),
        None => Err(at.bad("text", "expected a string")),
    };
    let entries = [entry(&path, Take::Fraction(1.0), "train")];
    let no_gen = |_: Builtin, _: u64, _| Ok(None);
    let err = mix::load(&entries, &options(offline_hub(&dir)), no_gen, read)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("rows.jsonl:2: field `text`: expected a string"),
        "{err}"
    );
    let skip = MixOptions {
        bad_rows: BadRows::Skip,
        ..options(offline_hub(&dir))
    };
    let mixed = mix::load(&entries, &skip, no_gen, read).unwrap();
    assert_eq!(mixed.rows, ["a", "b"]);
    assert_eq!(
        mixed.report.entries[0].skipped, 2,
        "the wrong type and the line that is not JSON"
    );
    assert!(mixed.report.lines()[0].contains("2 bad rows skipped"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn split_files_follow_the_hubs_naming() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let repo = names(&[
        "README.md",
        ".gitattributes",
        "data/train_prefs-00000-of-00001.parquet",
        "data/test_prefs-00000-of-00001.parquet",
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
        "validation/part-0.jsonl",
    ]);
    assert_eq!(
        split_files(&repo, "train").unwrap(),
        [
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet"
        ]
    );
    assert_eq!(
        split_files(&repo, "train_prefs").unwrap(),
        ["data/train_prefs-00000-of-00001.parquet"]
    );
    assert_eq!(
        split_files(&repo, "validation").unwrap(),
        ["validation/part-0.jsonl"]
    );
    let err = split_files(&repo, "dev").unwrap_err();
    assert!(err.contains("no files of split `dev`"), "{err}");
    // Files that name no split are the train split.
    let plain = names(&["corpus.jsonl", "more.parquet"]);
    assert_eq!(split_files(&plain, "train").unwrap(), plain);
    assert!(split_files(&plain, "test").is_err());
    assert!(split_files(&names(&["README.md"]), "train")
        .unwrap_err()
        .contains("no data files"));
}

#[test]
fn hub_ids_resolve_from_the_standard_cache_when_offline() {
    let dir = scratch("hub");
    let cache = dir.join("hub");
    // The layout huggingface_hub writes: refs/main names the commit; snapshots hold the files.
    let repo = cache.join("datasets--someorg--tiny-sft");
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(snapshot.join("data")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    let rows = sft_rows(12);
    write_parquet(
        &snapshot.join("data/train-00000-of-00001.parquet"),
        &rows,
        5,
        Compression::SNAPPY,
    );
    let hub = offline_hub(&cache);
    assert!(hub.offline());
    let (commit, files) = hub.dataset_files("someorg/tiny-sft", None, "train").unwrap();
    assert_eq!(commit, "0123abcd");
    assert_eq!(files, [snapshot.join("data/train-00000-of-00001.parquet")]);
    // A revision that is the commit itself works too (also as `id@revision` in a mix); an
    // unknown one names the cache.
    assert!(hub
        .dataset_files("someorg/tiny-sft", Some("0123abcd"), "train")
        .is_ok());
    let pinned = [Entry {
        dataset: "someorg/tiny-sft@0123abcd".into(),
        take: Take::Count(2),
        split: "train".into(),
        revision: None,
    }];
    let two = mix::load(&pinned, &options(hub.clone()), no_generated, identity).unwrap();
    assert_eq!(two.rows.len(), 2);
    let err = hub
        .dataset_files("someorg/tiny-sft", Some("v2"), "train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("someorg/tiny-sft") && err.contains("HF_HUB_OFFLINE") && err.contains("no snapshot"),
        "{err}"
    );
    // Through the mixer, like any other entry.
    let entries = [Entry {
        dataset: "someorg/tiny-sft".into(),
        take: Take::Count(12),
        split: "train".into(),
        revision: None,
    }];
    let mixed = mix::load(&entries, &options(hub.clone()), no_generated, identity).unwrap();
    assert_eq!(mixed.rows, rows);
    assert_eq!(mixed.report.entries[0].source, "hub");
    assert_eq!(mixed.report.entries[0].commit.as_deref(), Some("0123abcd"));
    // Models: a snapshot with a config and safetensors weights is a model directory.
    let model = cache.join("models--someorg--tiny-model/snapshots/feed");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::create_dir_all(cache.join("models--someorg--tiny-model/refs")).unwrap();
    std::fs::write(cache.join("models--someorg--tiny-model/refs/main"), "feed\n").unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let err = hub.model_dir("someorg/tiny-model", None).unwrap_err().to_string();
    assert!(err.contains("no .safetensors weights"), "{err}");
    std::fs::write(model.join("model.safetensors"), "").unwrap();
    assert_eq!(hub.model_dir("someorg/tiny-model", None).unwrap(), model);
    // Its tokenizer alone, for a look at the data.
    let err = hub
        .tokenizer_dir("someorg/tiny-model", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tokenizer.json"), "{err}");
    rlvr_data::Tokenizer::builtin_chars().save(&model).unwrap();
    assert_eq!(hub.tokenizer_dir("someorg/tiny-model", None).unwrap(), model);
    // HF_HOME and HF_TOKEN are honoured.
    let home = dir.display().to_string();
    let from_home = Hub::from_vars(|k| (k == "HF_HOME").then(|| home.clone()));
    assert_eq!(from_home.cache_dir(), cache);
    assert!(!from_home.offline());
    assert!(mix::is_hub_id("allenai/RLVR-MATH") && mix::is_hub_id("gpt2@main"));
    assert!(!mix::is_hub_id("data/train.jsonl") && !mix::is_hub_id("a/b/c"));
    std::fs::remove_dir_all(&dir).unwrap();
}
