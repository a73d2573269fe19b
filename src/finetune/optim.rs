//! The optimizer step: AdamW behind a learning-rate schedule, with gradients accumulated over
//! micro-batches and clipped by their global norm.
//!
//! AdamW is written out here rather than taken from candle-nn, whose moment estimates are
//! private: a checkpoint must hold them for `--resume` to continue the run exactly.

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// How the learning rate falls after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    Linear,
    Cosine,
}

impl std::str::FromStr for Decay {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Decay::Linear),
            "cosine" => Ok(Decay::Cosine),
            other => bail!("unknown schedule {other:?}: use linear or cosine"),
        }
    }
}

/// Linear warm-up to the peak rate, then linear or cosine decay towards 0 (transformers'
/// `get_linear_schedule_with_warmup` / `get_cosine_schedule_with_warmup`). The warm-up keeps
/// the first updates small while AdamW's moment estimates are still noisy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Schedule {
    pub peak_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub decay: Decay,
}

impl Schedule {
    /// The rate of optimizer step `step` (0-based). Warm-up reaches the peak on its last step
    /// (transformers starts at 0, which wastes the first step).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let factor = match self.decay {
            Decay::Linear => 1.0 - progress,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        self.peak_lr * factor
    }
}

/// Gradients summed over the micro-batches of one optimizer step, one per variable.
pub struct Accumulated {
    sums: Vec<Option<Tensor>>,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// AdamW (Loshchilov & Hutter, 2019) with torch's defaults: Adam's bias-corrected moment
/// estimates, and weight decay applied to the weights directly instead of through the gradient.
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Updates taken, for the bias correction.
    pub t: usize,
    /// Per variable: the running mean of the gradient (`exp_avg`) and of its square
    /// (`exp_avg_sq`), same shape as the variable.
    pub moments: Vec<(Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(vars: &[Var], weight_decay: f64) -> Result<Self> {
        let moments = vars
            .iter()
            .map(|v| Ok((v.zeros_like()?, v.zeros_like()?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            t: 0,
            moments,
        })
    }

    /// One update of every variable that has a gradient in `grads`.
    pub fn step(&mut self, vars: &[Var], grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let correct_m = 1.0 / (1.0 - b1.powi(self.t as i32));
        let correct_v = 1.0 / (1.0 - b2.powi(self.t as i32));
        for (var, (m, v)) in vars.iter().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            *m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&*m * correct_m)?;
            let v_hat = (&*v * correct_v)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// AdamW with schedule, accumulation and clipping, over the adapter's variables only.
pub struct Optimizer {
    adamw: AdamW,
    vars: Vec<Var>,
    schedule: Schedule,
    /// Clip the global gradient norm to this value (0 turns clipping off).
    max_grad_norm: f64,
    steps_done: usize,
}

impl Optimizer {
    pub fn new(
        vars: Vec<Var>,
        weight_decay: f64,
        schedule: Schedule,
        max_grad_norm: f64,
    ) -> Result<Self> {
        Ok(Self {
            adamw: AdamW::new(&vars, weight_decay)?,
            vars,
            schedule,
            max_grad_norm,
            steps_done: 0,
        })
    }

    /// Optimizer steps taken (including those before a resume).
    pub fn steps_done(&self) -> usize {
        self.steps_done
    }

    /// Writes AdamW's moment estimates as `exp_avg.<i>` / `exp_avg_sq.<i>` (the variables'
    /// order), the state that [`Optimizer::load`] needs besides the step count.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (i, (m, v)) in self.adamw.moments.iter().enumerate() {
            tensors.insert(format!("exp_avg.{i}"), m.copy()?);
            tensors.insert(format!("exp_avg_sq.{i}"), v.copy()?);
        }
        super::adapter::save_safetensors(&tensors, path)
    }

    /// Continues after `steps` optimizer steps with the moments saved by [`Optimizer::save`],
    /// so the next update is the one the uninterrupted run would have made.
    pub fn load(&mut self, path: &Path, steps: usize) -> Result<()> {
        let device = self.vars.first().map(|v| v.device().clone());
        let device = device.unwrap_or(candle_core::Device::Cpu);
        let mut tensors = candle_core::safetensors::load(path, &device)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (i, (var, moments)) in self
            .vars
            .iter()
            .zip(self.adamw.moments.iter_mut())
            .enumerate()
        {
            let mut take = |key: String| -> Result<Tensor> {
                let t = tensors
                    .remove(&key)
                    .with_context(|| format!("{} has no {key}", path.display()))?;
                if t.dims() != var.dims() {
                    bail!(
                        "{}: {key} is {:?}, the adapter's variable is {:?}",
                        path.display(),
                        t.dims(),
                        var.dims()
                    );
                }
                Ok(t)
            };
            *moments = (
                take(format!("exp_avg.{i}"))?,
                take(format!("exp_avg_sq.{i}"))?,
            );
        }
        self.adamw.t = steps;
        self.steps_done = steps;
        Ok(())
    }

    /// An empty gradient sum for the next step.
    pub fn accumulator(&self) -> Accumulated {
        Accumulated {
            sums: vec![None; self.vars.len()],
        }
    }

    /// Adds one micro-batch's gradients (from `loss.backward()`).
    pub fn accumulate(&self, acc: &mut Accumulated, grads: &GradStore) -> Result<()> {
        for (var, sum) in self.vars.iter().zip(acc.sums.iter_mut()) {
            if let Some(g) = grads.get(var.as_tensor()) {
                *sum = Some(match sum.take() {
                    Some(s) => (s + g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    }

    /// One AdamW update from the accumulated gradients multiplied by `scale` (1 / the number
    /// of target tokens, so the step follows the mean loss over every token of the step).
    pub fn step(&mut self, acc: Accumulated, scale: f64) -> Result<StepReport> {
        let grads: Vec<Option<Tensor>> = acc
            .sums
            .into_iter()
            .map(|g| g.map(|g| g * scale).transpose())
            .collect::<candle_core::Result<_>>()?;
        let mut squares = 0f64;
        for g in grads.iter().flatten() {
            squares += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let grad_norm = squares.sqrt();
        // torch's clip_grad_norm_: scale by max / (norm + 1e-6) when that is below 1.
        let clip = if self.max_grad_norm > 0.0 {
            (self.max_grad_norm / (grad_norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        let mut store = GradStore::default();
        for (var, g) in self.vars.iter().zip(grads) {
            if let Some(g) = g {
                let g = if clip < 1.0 { (g * clip)? } else { g };
                store.insert(var.as_tensor(), g);
            }
        }
        let lr = self.schedule.lr(self.steps_done);
        self.adamw.step(&self.vars, &store, lr)?;
        self.steps_done += 1;
        Ok(StepReport { lr, grad_norm })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn warmup_then_decay() {
        let s = Schedule {
            peak_lr: 1.0,
            warmup_steps: 2,
            total_steps: 6,
            decay: Decay::Linear,
        };
        let lrs: Vec<f64> = (0..6).map(|i| s.lr(i)).collect();
        assert_eq!(lrs, [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]);
        let c = Schedule {
            decay: Decay::Cosine,
            ..s
        };
        assert!((c.lr(4) - 0.5).abs() < 1e-12);
        assert!((c.lr(3) - 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos())).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        // With one step of plain AdamW the update is lr * sign(g) whatever the scale, so check
        // the reported norm and that a clipped and an unclipped run take the same first step.
        let var = Var::new(&[0f32, 0.], &Device::Cpu).unwrap();
        let schedule = Schedule {
            peak_lr: 0.1,
            warmup_steps: 0,
            total_steps: 1,
            decay: Decay::Linear,
        };
        let mut opt = Optimizer::new(vec![var.clone()], 0.0, schedule, 1.0).unwrap();
        let mut acc = opt.accumulator();
        let loss = (var.as_tensor() * &Tensor::new(&[3f32, 4.], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        opt.accumulate(&mut acc, &loss.backward().unwrap()).unwrap();
        let report = opt.step(acc, 1.0).unwrap();
        assert!((report.grad_norm - 5.0).abs() < 1e-6);
        let v: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!(
            (v[0] + 0.1).abs() < 1e-6 && (v[1] + 0.1).abs() < 1e-6,
            "{v:?}"
        );
    }
}
