"""The one training loop: full-data training that records dynamics, and (weighted) coreset training.

``train(splits, spec, out_dir)`` trains, evaluates, optionally records per-epoch logits by sample
id (no extra forward pass in the default ``train`` mode), checkpoints every ``checkpoint_every``
epochs and resumes from the newest checkpoint when started again with the same spec and folder;
a resumed run is bit-identical on CPU to an uninterrupted one. A run that records dynamics ends
with one clean pass of the final model over the training set (eval mode, no augmentation): its
logits and penultimate features go into the dynamics folder (``final_logits.npy``,
``features.npy``; see :mod:`tdds_core.dynamics`), the input of Entropy and Moderate.

Outputs in ``out_dir``: ``run.json`` (spec and digest; a folder holding another spec is refused),
``dynamics/`` and ``stats/``, ``checkpoint.pt`` (removed at the end), ``model.pt``,
``history.json``, ``result.json`` and ``manifest.json`` (written last).

Modules, bottom to top: ``spec`` (TrainSpec, its identity, TrainResult), ``forward`` (loss,
evaluation, the float32-head passes whose logits are stored), ``distributed`` (torchrun process
group, synchronised batch norm, reductions), ``checkpoint`` (training state, the writer thread,
readers of a finished run), ``trainer`` (the loop), ``run`` (:func:`train`: claim the folder and
run the loop in this process), ``launch`` (the run in K torchrun processes or as a PyTorchJob)."""
from .checkpoint import load_checkpoint, load_model, load_result
from .distributed import GlooSyncBatchNorm, sync_batchnorm
from .forward import Fp32HeadForward, capture_forward, evaluate, split_head, weighted_loss
from .launch import train_in_processes, train_on_nodes, under_torchrun
from .run import kernel_flags, train
from .spec import TrainResult, TrainSpec, check_arch, coreset_batch_size, coreset_spec, full_data_spec, kept_weights

__all__ = ["TrainSpec", "TrainResult", "full_data_spec", "coreset_spec", "coreset_batch_size", "kept_weights",
           "check_arch", "train", "kernel_flags", "load_result", "load_model", "load_checkpoint", "weighted_loss",
           "evaluate", "split_head", "Fp32HeadForward", "capture_forward", "GlooSyncBatchNorm", "sync_batchnorm",
           "train_in_processes", "train_on_nodes", "under_torchrun"]
