//! Out-of-process plug-ins: the Python example end to end, and plug-ins that hang, crash or
//! talk nonsense, which must fail their request with a reason and never hang the caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rlvr_verifiers::{Mode, PluginVerifier, Registry, Truth, Verifier};

fn python(code: &str) -> Vec<String> {
    vec!["python3".into(), "-c".into(), code.into()]
}

fn example() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/plugin_verifier.py");
    vec!["python3".into(), path.into()]
}

fn truth(s: &str) -> Truth {
    Truth::Text(s.into())
}

#[test]
fn the_python_example_verifies_through_the_registry() {
    let mut reg = Registry::new(Mode::Default);
    reg.register(Arc::new(PluginVerifier::new(
        "contains",
        example(),
        Duration::from_secs(20),
    )));
    reg.alias("my_dataset", "contains");
    let yes = reg
        .verify("my_dataset", "work...\nThe capital is Paris", "paris")
        .unwrap();
    assert!(yes.verified && yes.score == 1.0, "{yes:?}");
    assert!(yes.reason.contains("contains"));
    let no = reg.verify("contains", "The capital is Lyon", "paris").unwrap();
    assert!(!no.verified && no.score == 0.0);
    assert!(reg.names().contains(&"contains".to_string()));
}

#[test]
fn a_hanging_plugin_times_out_and_is_restarted() {
    // Answers the first request only after a long sleep; every later one at once.
    let code = "import json,sys,time\nfirst=True\nfor l in sys.stdin:\n    r=json.loads(l)\n    if first:\n        first=False; time.sleep(30)\n    print(json.dumps({'id': r['id'], 'verified': True}), flush=True)\n";
    let p = PluginVerifier::new("slow", python(code), Duration::from_millis(1500));
    let t = Instant::now();
    let v = p.verify("x", &truth("x"));
    assert!(!v.verified && v.reason.contains("timed out"), "{v:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // The killed process is replaced; the fresh one hangs on its first request again, so a
    // second timeout proves the restart rather than a stuck reader.
    let v = p.verify("x", &truth("x"));
    assert!(v.reason.contains("timed out"), "{v:?}");
}

#[test]
fn a_crashing_plugin_is_reported_and_restarted() {
    // Exits after reading one request; a restart serves the next.
    let code = "import json,sys\nl=sys.stdin.readline()\nsys.exit(3)\n";
    let p = PluginVerifier::new("crash", python(code), Duration::from_secs(20));
    for _ in 0..2 {
        let v = p.verify("x", &truth("x"));
        assert!(!v.verified && v.reason.contains("exited"), "{v:?}");
    }
    let garbage = PluginVerifier::new(
        "garbage",
        python("import sys\nsys.stdin.readline()\nprint('hello', flush=True)\n"),
        Duration::from_secs(20),
    );
    let v = garbage.verify("x", &truth("x"));
    assert!(!v.verified && v.reason.contains("hello"), "{v:?}");
    let missing = PluginVerifier::new(
        "missing",
        vec!["/nonexistent/plugin".into()],
        Duration::from_secs(1),
    );
    let v = missing.verify("x", &truth("x"));
    assert!(v.reason.contains("cannot start"), "{v:?}");
}

#[test]
fn a_request_whose_process_dies_is_retried_on_a_fresh_one_and_processes_run_concurrently() {
    // The first process to see a request dies without answering (it leaves a marker). Later
    // ones answer only once four processes hold a request at once (each leaves its pid in
    // `meet` and waits for four), so four calls succeed within the timeout only if they run
    // concurrently.
    let dir = std::env::temp_dir().join(format!("rlvr-plugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("meet")).unwrap();
    let code = format!(
        "import json,os,sys,time\nd={d:?}\nfor l in sys.stdin:\n    r=json.loads(l)\n    if not os.path.exists(d+'/crashed'):\n        open(d+'/crashed','w').close(); os._exit(9)\n    if r['response'] != 'alone':\n        open(d+'/meet/'+str(os.getpid()),'w').close()\n        t=time.time()\n        while len(os.listdir(d+'/meet')) < 4 and time.time()-t < 30: time.sleep(0.01)\n    print(json.dumps({{'id': r['id'], 'verified': len(os.listdir(d+'/meet')) in (0, 4)}}), flush=True)\n",
        d = dir.to_str().unwrap()
    );
    let p = Arc::new(PluginVerifier::with_processes(
        "flaky",
        python(&code),
        Duration::from_secs(20),
        4,
    ));
    let v = p.verify("alone", &truth("x"));
    assert!(v.verified, "the request is retried, not failed: {v:?}");
    assert_eq!(p.restarts(), 1);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || p.verify(&i.to_string(), &truth("x")))
        })
        .collect();
    for h in handles {
        let v = h.join().unwrap();
        assert!(v.verified, "{v:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
