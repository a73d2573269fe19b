//! The optimizer step: candle-nn's AdamW behind a learning-rate schedule, with gradients
//! accumulated over micro-batches and clipped by their global norm.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW};
use serde::Serialize;

/// How the learning rate falls after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
        // transformers' defaults for betas and epsilon.
        let params = ParamsAdamW {
            lr: schedule.lr(0),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        };
        Ok(Self {
            adamw: AdamW::new(vars.clone(), params)?,
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

    /// Continues the schedule at `step` after a resume. AdamW's moment estimates start afresh:
    /// candle-nn keeps them private, so a checkpoint cannot hold them.
    pub fn resume_at(&mut self, step: usize) {
        self.steps_done = step;
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
        self.adamw.set_learning_rate(lr);
        self.adamw.step(&store)?;
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
