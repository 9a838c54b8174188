"""A slim copy of a grid's output folder, to carry finished work from one GPU call to the next
(issue 18: one call runs at most 10 minutes and carries at most 64 MiB).

The grid is content-keyed: a finished stage folder (its ``manifest.json``) is reused, not trained
again, and only its ``result.json`` (and scores, selections, the recorded dynamics) are read by
the stages after it. So the copy keeps every file but the model weights (``*.pt``: ``model.pt``,
and the ``checkpoint.pt`` of a training the call cut short, which then restarts), the penultimate
features (``features.npy``: Moderate's input, scored in the first call) and what is over
``--max-file-mb``; the copied manifests drop those files from their checksum lists and name them
(``"left_out"``). It prints what it left out and the copy's size. Only for carrying a benchmark's
work: a slim folder is not a whole artifact (no weights).

    python benchmarks/gpu_carry.py benchmarks/out/full/grid "$OUT/grid"        # on the GPU machine
    # next call: carry the returned folder back to benchmarks/out/full/grid before the grid runs
"""
from __future__ import annotations

import argparse
import fnmatch
import shutil
import sys
from pathlib import Path

DROP = ("*.pt", "features.npy")


def slim_copy(src: Path, dst: Path, *, drop: tuple[str, ...] = DROP, max_file_mb: float = 16.0) -> tuple[int, list[str]]:
    """Copy ``src`` to ``dst`` without the files named by ``drop`` or larger than ``max_file_mb``.
    Each copied ``manifest.json`` says so: the files left out leave its checksum list and are named
    under ``"left_out"`` (``"slim_copy": true``), so the copy verifies as what it is.
    Returns ``(bytes copied, relative paths left out)``."""
    import json

    copied, left = 0, []
    for p in sorted(src.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(src)
        if p.name != "manifest.json" and (any(fnmatch.fnmatch(p.name, pat) for pat in drop)
                                          or p.stat().st_size > max_file_mb * 2 ** 20):
            left.append(str(rel))
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst / rel)
        copied += p.stat().st_size
    import hashlib

    rewritten: set[str] = set()
    # deepest first: a folder's manifest lists its sub-folders' manifests with their checksums
    for m in sorted(dst.rglob("manifest.json"), key=lambda q: -len(q.parts)):
        folder = m.parent.relative_to(dst)
        manifest = json.loads(m.read_text())
        files = manifest.get("files")
        if not isinstance(files, dict):
            continue
        gone = sorted(name for name in files if str(folder / name) in left)
        changed = [name for name in files if str(folder / name) in rewritten]
        if not gone and not changed:
            continue
        for name in gone:
            files.pop(name)
        for name in changed:
            data = (m.parent / name).read_bytes()
            files[name] = {**files[name], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        if gone:
            manifest["slim_copy"], manifest["left_out"] = True, gone
        m.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        rewritten.add(str(m.relative_to(dst)))
    return copied, left


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="The grid's output folder.")
    ap.add_argument("dst", type=Path, help="Where the slim copy goes (e.g. under the call's $OUT).")
    ap.add_argument("--max-file-mb", type=float, default=16.0, help="Leave out any file larger than this.")
    args = ap.parse_args(argv)
    if not args.src.is_dir():
        print(f"{args.src} is not a folder", file=sys.stderr)
        return 2
    copied, left = slim_copy(args.src, args.dst, max_file_mb=args.max_file_mb)
    print(f"copied {copied / 2 ** 20:.1f} MiB to {args.dst}; left out {len(left)} files"
          + (f" (e.g. {', '.join(left[:3])})" if left else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
