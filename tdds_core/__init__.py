"""tdds: dataset pruning with Temporal Dual-Depth Scoring (Zhang et al., CVPR 2024).

The pure library: config, data, models, engine, dynamics, scoring, selection, storage, tracking.
Nothing here imports kfp or mlflow at import time.
"""
__version__ = "0.1.0"
