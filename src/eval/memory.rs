//! How much memory a run takes: the process's peak resident set (Linux `VmHWM`, which can be
//! reset between models) and, on CUDA, the GPU memory `nvidia-smi` reports for this process.
//! `bench` reports both per model; `finetune` and `speculative-costs` record the peak.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Forgets the process's peak resident set so far (Linux: `/proc/self/clear_refs`, value 5).
///
/// First it hands the memory freed by earlier models back to the system (glibc's
/// `malloc_trim`): the peak restarts from the resident set, and memory the allocator kept from
/// the previous model would otherwise count towards the next one's peak (Pythia-1B measured
/// after StableLM 2 peaked at 1.5× its weights, on its own at 1.09×).
pub fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
        unsafe {
            malloc_trim(0);
        }
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident set since the last reset (Linux: VmHWM), in bytes.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Watches this process's GPU memory while a model loads and runs. CUDA allocations do not
/// show in the resident set and candle keeps no allocator statistics, so a thread samples
/// `nvidia-smi` and keeps the largest figure; a peak shorter than the 50 ms interval can be missed.
pub struct DeviceMemorySampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<u64>>,
}

impl DeviceMemorySampler {
    /// Starts sampling on CUDA; on other devices there is nothing to watch.
    pub fn start(device: &candle_core::Device) -> Option<Self> {
        if !device.is_cuda() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let pid = std::process::id();
        let thread = std::thread::spawn(move || {
            let mut peak: Option<u64> = None;
            loop {
                let done = flag.load(Ordering::Relaxed);
                let used = std::process::Command::new("nvidia-smi")
                    .args([
                        "--query-compute-apps=pid,used_memory",
                        "--format=csv,noheader,nounits",
                    ])
                    .output()
                    .ok()
                    .and_then(|out| process_gpu_memory(&String::from_utf8_lossy(&out.stdout), pid));
                peak = peak.max(used);
                if done {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Some(DeviceMemorySampler { stop, thread })
    }

    /// Stops sampling (after one last sample) and returns the peak, if `nvidia-smi` answered.
    pub fn finish(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// The GPU memory of process `pid`, in bytes, from `nvidia-smi
/// --query-compute-apps=pid,used_memory --format=csv,noheader,nounits` (MiB per line).
fn process_gpu_memory(csv: &str, pid: u32) -> Option<u64> {
    csv.lines()
        .filter_map(|line| {
            let (p, mib) = line.split_once(',')?;
            if p.trim().parse::<u32>().ok()? != pid {
                return None;
            }
            mib.trim().parse::<u64>().ok()
        })
        .max()
        .map(|mib| mib * 1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_memory_is_read_for_this_process_only() {
        let csv = "4242, 1536\n17, 9000\n4242, 2048\n";
        assert_eq!(process_gpu_memory(csv, 4242), Some(2048 * 1024 * 1024));
        assert_eq!(process_gpu_memory(csv, 99), None);
        assert_eq!(process_gpu_memory("No devices were found\n", 4242), None);
    }

    #[test]
    fn there_is_no_device_memory_to_sample_on_cpu() {
        assert!(DeviceMemorySampler::start(&candle_core::Device::Cpu).is_none());
    }
}
