"""Training throughput: a reference-style loop against the tdds engine, capture on and off.

Reference style (as the authors' scripts): PIL transforms (random crop, flip, ToTensor, Normalize)
in a DataLoader with 2 workers, fp32, batch 100, the logits gathered with numpy per batch.
tdds: the engine on a device-resident uint8 tensor with tensor augmentation, bf16 autocast and
channels_last on CUDA, batch 128, with dynamics capture on and off.

    python benchmarks/train_throughput.py [--device cuda] [--arch resnet18] [--n 10000] [--epochs 2]

Input is CIFAR-shaped synthetic data (speed does not depend on the pixels). Prints img/s per
variant and the ratios; ``--json FILE`` writes them too. The engine's figures are over whole epochs
(the per-epoch work of capture, checkpoints and evaluation included; the capture overhead is
measured on that clock), with the train steps alone beside them (``*_step_img_s``).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date

import torch


def reference_loop(splits, arch: str, device: torch.device, epochs: int, batch: int = 100) -> float:
    from PIL import Image
    from torchvision import transforms as T

    from tdds_core.models import create_model

    tf = T.Compose([T.RandomCrop(splits.image_size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(splits.mean, splits.std)])
    images, labels = splits.train.images, splits.train.labels

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            img = Image.fromarray(images[i].transpose(1, 2, 0))
            return tf(img), int(labels[i]), i

    dl = torch.utils.data.DataLoader(DS(), batch_size=batch, shuffle=True, num_workers=2)
    torch.manual_seed(0)
    model = create_model(arch, num_classes=splits.num_classes, in_channels=3, image_size=splits.image_size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    outputs = []
    seen, t_train = 0, 0.0
    for ep in range(epochs):
        t0 = time.perf_counter()
        for x, y, idx in dl:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            outputs.append((out.detach().cpu().numpy(), idx.numpy()))  # the authors gather per batch
            seen += len(y) if ep > 0 or epochs == 1 else 0
        if device.type == "cuda":
            torch.cuda.synchronize()
        if ep > 0 or epochs == 1:  # first epoch is warm-up
            t_train += time.perf_counter() - t0
    return seen / max(t_train, 1e-9)


def engine_loop(splits, arch: str, device: str, epochs: int, capture: bool, batch: int = 128) -> tuple[float, float]:
    """(whole-epoch img/s, train-step img/s) of the engine: whole epochs count the per-epoch work too
    (copy of the captured logits to the host, finite check, the dynamics file and its hash,
    checkpoint, evaluation when due); the train-step figure counts the batches only."""
    from tdds_core.engine import TrainSpec, train

    spec = TrainSpec(arch=arch, epochs=epochs, batch_size=batch, record_dynamics=capture, save_features=False,
                     device=device, progress=False, eval_every=10**6)
    with tempfile.TemporaryDirectory() as d:
        res = train(splits, spec, d)
    hist = res.history[1:] if len(res.history) > 1 else res.history  # first epoch is warm-up
    images = sum(h["images"] for h in hist)
    return images / sum(h["epoch_s"] for h in hist), images / sum(h["train_s"] for h in hist)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--n", type=int, default=10000, help="training samples (CIFAR-shaped 3x32x32)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per variant (the first is warm-up when > 1)")
    ap.add_argument("--repeat", type=int, default=3, help="engine runs per variant, interleaved; the best is reported")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    from tdds_core.data.datasets import synthetic

    splits = synthetic(num_train=args.n, num_test=200, num_classes=10, image_size=32, channels=3)
    splits.crop_padding = 4
    dev = torch.device(args.device)
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    res = {"card": card, "torch": torch.__version__, "date": date.today().isoformat(), "arch": args.arch, "n": args.n,
           "epochs": args.epochs}
    if not args.skip_reference:
        res["reference_img_s"] = reference_loop(splits, args.arch, dev, args.epochs)
    # interleave the two variants and keep each one's best run: run-to-run noise on a shared machine
    # is larger than the cost of capture (a 128-row index_put per batch)
    cap, nocap = [], []
    for i in range(max(1, args.repeat)):
        for capture in ((False, True) if i % 2 == 0 else (True, False)):  # alternate the order too
            (cap if capture else nocap).append(engine_loop(splits, args.arch, args.device, args.epochs, capture))
    # whole epochs (per-epoch work included) are the headline; the train steps alone beside them
    res["engine_capture_img_s"], res["engine_nocapture_img_s"] = max(c[0] for c in cap), max(c[0] for c in nocap)
    res["engine_capture_step_img_s"] = max(c[1] for c in cap)
    res["engine_nocapture_step_img_s"] = max(c[1] for c in nocap)
    res["engine_runs"] = {"capture": [round(v[0], 1) for v in cap], "nocapture": [round(v[0], 1) for v in nocap]}
    if "reference_img_s" in res:
        res["speedup_vs_reference"] = res["engine_capture_img_s"] / res["reference_img_s"]
    res["capture_overhead_pct"] = 100.0 * (1 - res["engine_capture_img_s"] / res["engine_nocapture_img_s"])
    for k, v in res.items():
        print(f"{k:>24}: {v:.3f}" if isinstance(v, float) else f"{k:>24}: {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
