//! A small Hugging Face hub client: downloads with a progress bar, resumption, SHA-256
//! verification and gated-model tokens, into the standard cache that Python's
//! `huggingface_hub` uses too (so models downloaded by either are shared).
//!
//! Why our own rather than the `hf-hub` crate (which reports progress too and shares the same
//! cache): the workbook wants, in one file a learner can read, a download that resumes
//! where an interrupted one stopped, checks each file's SHA-256 against the hub's ETag before it
//! is named complete, and is tested against a local server. The hub's protocol for plain
//! downloads is small (a `HEAD` and a `GET` on `/{repo}/resolve/{revision}/{file}`), so we speak
//! it directly with `ureq`.
//!
//! Cache layout (`$HF_HUB_CACHE`, default `~/.cache/huggingface/hub`):
//! ```text
//! models--{org}--{name}/blobs/{etag}                 the file, named by its hash
//! models--{org}--{name}/snapshots/{commit}/{file}    a symlink to the blob
//! models--{org}--{name}/refs/{revision}              the commit the revision pointed to
//! ```

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Called with (file, bytes done, bytes total) as a download progresses.
pub type ProgressCallback = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// Connection settings shared by every repository.
#[derive(Clone)]
pub struct HubClient {
    endpoint: String,
    cache_dir: PathBuf,
    token: Option<String>,
    offline: bool,
    show_progress: bool,
    callback: Option<ProgressCallback>,
}

/// How many times a cut connection is resumed before giving up.
const ATTEMPTS: usize = 3;

impl HubClient {
    /// Settings from the environment: `HF_ENDPOINT`, `HF_TOKEN` (or the token file in
    /// `$HF_HOME`), `HF_HUB_CACHE` / `HF_HOME`, and `HF_HUB_OFFLINE=1`, read once, here.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings [`from_env`](Self::from_env) reads, looked up with `var` instead of in the
    /// process's environment. A test or a program that embeds the client passes its settings
    /// here: changing the environment of a running process races with every thread that reads
    /// it (which is why `std::env::set_var` is `unsafe` in Rust 2024).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            crate::hub::assets::home_dir()
                .join(".cache")
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(hf_home.join("token"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        Self {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache_dir,
            token,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| v != "0"),
            show_progress: true,
            callback: None,
        }
    }

    pub fn with_endpoint(mut self, url: &str) -> Self {
        self.endpoint = url.trim_end_matches('/').to_string();
        self
    }

    pub fn with_cache_dir(mut self, dir: PathBuf) -> Self {
        self.cache_dir = dir;
        self
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Offline: serve only from the cache, never touch the network (sticky once set).
    pub fn offline(mut self, yes: bool) -> Self {
        self.offline |= yes;
        self
    }

    pub fn progress(mut self, yes: bool) -> Self {
        self.show_progress = yes;
        self
    }

    pub fn with_progress_callback(mut self, callback: ProgressCallback) -> Self {
        self.callback = Some(callback);
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// A model repository at revision `main`.
    pub fn model(&self, repo_id: &str) -> HubRepo {
        self.repo(RepoKind::Model, repo_id)
    }

    /// A dataset repository (such as `cais/mmlu`) at revision `main`.
    pub fn dataset(&self, repo_id: &str) -> HubRepo {
        self.repo(RepoKind::Dataset, repo_id)
    }

    fn repo(&self, kind: RepoKind, repo_id: &str) -> HubRepo {
        HubRepo {
            client: self.clone(),
            kind,
            repo_id: repo_id.to_string(),
            revision: "main".to_string(),
        }
    }
}

/// What a `HEAD` on a file tells before downloading it.
#[derive(Debug, Clone)]
struct FileMeta {
    commit: String,
    etag: String,
    size: Option<u64>,
    /// The SHA-256 of LFS files (large files: weights), to verify the download.
    sha256: Option<String>,
}

/// Models and datasets live side by side on the hub; only their URLs and cache folders differ
/// (`/datasets/{id}/resolve/...`, `datasets--org--name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

/// One repository of the hub at one revision.
#[derive(Clone)]
pub struct HubRepo {
    client: HubClient,
    kind: RepoKind,
    repo_id: String,
    revision: String,
}

enum Fetch {
    Found(PathBuf),
    NotFound,
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("W/").trim_matches('"').to_string())
}

impl HubRepo {
    fn repo_dir(&self) -> PathBuf {
        let folder = match self.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        };
        self.client
            .cache_dir
            .join(format!("{folder}--{}", self.repo_id.replace('/', "--")))
    }

    /// The repository's page on the hub (where a gated license is accepted).
    pub fn page(&self) -> String {
        match self.kind {
            RepoKind::Model => format!("{}/{}", self.client.endpoint, self.repo_id),
            RepoKind::Dataset => format!("{}/datasets/{}", self.client.endpoint, self.repo_id),
        }
    }

    fn url(&self, filename: &str) -> String {
        format!("{}/resolve/{}/{}", self.page(), self.revision, filename)
    }

    /// The cached copy of `filename` for the commit `refs/{revision}` points to.
    fn cached(&self, filename: &str) -> Option<PathBuf> {
        let commit =
            std::fs::read_to_string(self.repo_dir().join("refs").join(&self.revision)).ok()?;
        let path = self
            .repo_dir()
            .join("snapshots")
            .join(commit.trim())
            .join(filename);
        path.exists().then_some(path)
    }

    /// The local path of `filename`, downloading it if it is not cached.
    pub fn get(&self, filename: &str) -> Result<PathBuf> {
        match self.fetch(filename)? {
            Fetch::Found(p) => Ok(p),
            Fetch::NotFound => bail!(
                "{filename} was not found in {} on {}: check the model id and file name",
                self.repo_id,
                self.client.endpoint
            ),
        }
    }

    /// Like [`get`](Self::get), but `None` when the repository has no such file.
    pub fn get_optional(&self, filename: &str) -> Result<Option<PathBuf>> {
        if self.client.offline {
            return Ok(self.cached(filename));
        }
        Ok(match self.fetch(filename)? {
            Fetch::Found(p) => Some(p),
            Fetch::NotFound => None,
        })
    }

    /// The weight files: the shards named by `model.safetensors.index.json`, else
    /// `model.safetensors`.
    pub fn weight_files(&self) -> Result<Vec<PathBuf>> {
        if let Some(index) = self.get_optional("model.safetensors.index.json")? {
            let text = std::fs::read_to_string(&index)?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", index.display()))?;
            let map = json["weight_map"]
                .as_object()
                .context("model.safetensors.index.json has no weight_map")?;
            let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
            shards.sort();
            shards.dedup();
            return shards.into_iter().map(|s| self.get(s)).collect();
        }
        Ok(vec![self.get("model.safetensors")?])
    }

    fn fetch(&self, filename: &str) -> Result<Fetch> {
        // A cached snapshot is used as is: no network round trip for files that never change
        // for a commit (delete the snapshot to fetch a newer revision).
        if let Some(p) = self.cached(filename) {
            return Ok(Fetch::Found(p));
        }
        if self.client.offline {
            bail!(
                "{filename} of {} is not in the cache {}: run `billion-llm download {}` while \
                 online first, or unset HF_HUB_OFFLINE / drop --offline",
                self.repo_id,
                self.client.cache_dir.display(),
                self.repo_id
            );
        }
        let Some(meta) = self.head(filename)? else {
            return Ok(Fetch::NotFound);
        };
        let blob = self.repo_dir().join("blobs").join(&meta.etag);
        if !blob.exists() {
            self.download(filename, &meta, &blob)?;
        }
        let snapshot = self
            .repo_dir()
            .join("snapshots")
            .join(&meta.commit)
            .join(filename);
        link(&blob, &snapshot)?;
        let refs = self.repo_dir().join("refs");
        std::fs::create_dir_all(&refs)?;
        std::fs::write(refs.join(&self.revision), &meta.commit)?;
        Ok(Fetch::Found(snapshot))
    }

    fn agent(&self, redirects: u32) -> ureq::Agent {
        ureq::Agent::config_builder()
            .max_redirects(redirects)
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn authorize<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.client.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn status_error(&self, status: u16, filename: &str) -> anyhow::Error {
        match status {
            401 | 403 => anyhow::anyhow!(
                "{repo} is gated or private (HTTP {status}): accept its license at {page} \
                 and set HF_TOKEN to an access token of that account \
                 (https://huggingface.co/settings/tokens)",
                repo = self.repo_id,
                page = self.page()
            ),
            _ => anyhow::anyhow!(
                "downloading {filename} of {} failed with HTTP {status}",
                self.repo_id
            ),
        }
    }

    /// Asks the hub about a file without following redirects: the `X-Linked-*` headers that
    /// describe LFS files are on the first answer, not on the CDN's.
    fn head(&self, filename: &str) -> Result<Option<FileMeta>> {
        let resp = self
            .authorize(self.agent(0).head(&self.url(filename)))
            .call()
            .with_context(|| {
                format!(
                    "cannot reach {} (set HF_ENDPOINT for a mirror, or use --offline with a filled cache)",
                    self.client.endpoint
                )
            })?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if !(200..400).contains(&status) {
            return Err(self.status_error(status, filename));
        }
        let sha256 = header(&resp, "x-linked-etag")
            .filter(|e| e.len() == 64 && e.chars().all(|c| c.is_ascii_hexdigit()));
        let etag = sha256
            .clone()
            .or_else(|| header(&resp, "etag"))
            .with_context(|| format!("the hub sent no ETag for {filename}"))?;
        let size = header(&resp, "x-linked-size")
            .or_else(|| header(&resp, "content-length"))
            .and_then(|s| s.parse().ok());
        let commit = header(&resp, "x-repo-commit").unwrap_or_else(|| self.revision.clone());
        Ok(Some(FileMeta {
            commit,
            etag,
            size,
            sha256,
        }))
    }

    /// Downloads into `blob.incomplete`, resuming what an earlier attempt left, verifies the
    /// checksum, then renames: a file that looks complete always is.
    fn download(&self, filename: &str, meta: &FileMeta, blob: &Path) -> Result<()> {
        std::fs::create_dir_all(blob.parent().unwrap())?;
        let partial = blob.with_extension("incomplete");
        let done = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = meta.size {
            ensure_free_space(
                size.saturating_sub(done),
                available_space(&self.client.cache_dir)?,
                &self.client.cache_dir,
            )?;
        }
        let bar = self.progress_bar(filename, meta.size);
        let mut last_err = None;
        for _ in 0..ATTEMPTS {
            match self.download_attempt(filename, &partial, meta.size, &bar) {
                Ok(()) => {
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        bar.finish_and_clear();
        if let Some(e) = last_err {
            return Err(e.context(format!(
                "downloading {filename} of {} was interrupted; the partial file {} is kept and \
                 the next run resumes it",
                self.repo_id,
                partial.display()
            )));
        }
        if let Some(expected) = &meta.sha256 {
            let actual = sha256_file(&partial)?;
            if &actual != expected {
                let _ = std::fs::remove_file(&partial);
                bail!(
                    "checksum mismatch for {filename} of {}: expected SHA-256 {expected}, got {actual}. \
                     The corrupted file was deleted; run the command again to re-download it",
                    self.repo_id
                );
            }
        }
        std::fs::rename(&partial, blob)?;
        Ok(())
    }

    fn progress_bar(&self, filename: &str, size: Option<u64>) -> indicatif::ProgressBar {
        let bar = if self.client.show_progress {
            indicatif::ProgressBar::new(size.unwrap_or(0))
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:30!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        bar.set_message(filename.to_string());
        bar
    }

    fn download_attempt(
        &self,
        filename: &str,
        partial: &Path,
        size: Option<u64>,
        bar: &indicatif::ProgressBar,
    ) -> Result<()> {
        let mut done = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if size == Some(done) {
            return Ok(());
        }
        let mut req = self.authorize(self.agent(10).get(&self.url(filename)));
        if done > 0 {
            req = req.header("Range", format!("bytes={done}-"));
        }
        let resp = req.call()?;
        let status = resp.status().as_u16();
        let mut file = match status {
            206 => std::fs::OpenOptions::new().append(true).open(partial)?,
            200 => {
                // The server ignored the range: start over.
                done = 0;
                std::fs::File::create(partial)?
            }
            _ => return Err(self.status_error(status, filename)),
        };
        bar.set_position(done);
        let total = size.unwrap_or(0);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])?;
            done += n as u64;
            bar.set_position(done);
            if let Some(cb) = &self.client.callback {
                cb(filename, done, total);
            }
        }
        file.sync_all()?;
        if let Some(size) = size {
            if done != size {
                bail!("connection closed after {done} of {size} bytes");
            }
        }
        Ok(())
    }
}

/// Points `snapshot` at `blob` with a relative symlink (a copy where symlinks fail).
fn link(blob: &Path, snapshot: &Path) -> Result<()> {
    let dir = snapshot.parent().unwrap();
    std::fs::create_dir_all(dir)?;
    if snapshot.exists() {
        return Ok(());
    }
    let depth = snapshot
        .strip_prefix(blob.parent().unwrap().parent().unwrap())
        .map(|p| p.components().count() - 1)
        .unwrap_or(2);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob.file_name().unwrap());
    #[cfg(unix)]
    if std::os::unix::fs::symlink(&target, snapshot).is_ok() {
        return Ok(());
    }
    std::fs::copy(blob, snapshot)?;
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Free bytes on the file system holding `dir` (or its nearest existing parent).
pub fn available_space(dir: &Path) -> Result<u64> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            probe = PathBuf::from(".");
            break;
        }
    }
    #[cfg(unix)]
    {
        let stat = rustix::fs::statvfs(&probe)
            .with_context(|| format!("cannot query free space of {}", probe.display()))?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
    #[cfg(not(unix))]
    {
        Ok(u64::MAX)
    }
}

/// Fails before a download that cannot fit.
pub fn ensure_free_space(needed: u64, available: u64, dir: &Path) -> Result<()> {
    if needed > available {
        bail!(
            "not enough disk space in {}: the download needs {:.2} GB but only {:.2} GB are free; \
             free some space or point HF_HUB_CACHE at a larger disk",
            dir.display(),
            needed as f64 / 1e9,
            available as f64 / 1e9
        );
    }
    Ok(())
}
