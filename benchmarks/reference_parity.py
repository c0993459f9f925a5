"""Checkpoint-import parity with the reference implementation (run by hand, not in CI).

The reference ``astropt`` builds tiny models, saves ``ckpt.pt`` files the way its training
script does and records its outputs; here they are imported (``AstroPT.from_pretrained`` on
the file and on the converted folder) and the outputs compared:

- a 2-modality model (images with learned positions + a second modality with continuous
  positions), affine tokeniser, LoRA rank 2 with non-zero LoRA weights, plain and
  ``torch.compile``-prefixed state dicts: default embeddings and all next-token predictions;
- a 1-modality AIM model with biases: embeddings and 6 generated tokens (KV cache on/off).

    python -m benchmarks.reference_parity                 # creates benchmarks/out/refenv once
    python -m benchmarks.reference_parity --python P      # a Python that imports the reference
    python -m benchmarks.reference_parity --ref-path DIR  # reference unpacked in DIR (PYTHONPATH)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REFERENCE_SIDE = r'''
import sys
import numpy as np, torch
from astropt.model import GPT, GPTConfig, ModalityConfig, ModalityRegistry

out = sys.argv[1]
torch.manual_seed(0)

def save(model, args, registry, path, compiled=False):
    model.train()  # loralib merges LoRA into the weight in eval mode; training saves unmerged
    state = (torch.compile(model) if compiled else model).state_dict()
    torch.save({"model": state, "model_args": args, "modality_registry": registry, "iter_num": 7,
                "best_val_loss": torch.tensor(0.5), "optimizer": {}, "config": {"lr": 1e-3}}, path)

mods = [ModalityConfig("images", 4 * 4 * 3, 1, 4, True), ModalityConfig("spectra", 10, 1, 0, False)]
reg = ModalityRegistry(mods)
args = dict(block_size=32, n_layer=3, n_head=2, n_embd=32, n_chan=3, dropout=0.0, bias=False,
            attn_type="causal", tokeniser="affine", lora_r=2, lora_alpha=16, modalities=mods)
m = GPT(GPTConfig(**args), reg, master_process=False)
with torch.no_grad():
    for blk in m.transformer.h:  # loralib zero-initialises B: give the update real values
        blk.attn.c_attn.lora_A.normal_(0, 0.2)
        blk.attn.c_attn.lora_B.normal_(0, 0.2)
save(m, args, reg, f"{out}/mm_lora.pt")
save(m, args, reg, f"{out}/mm_lora_compiled.pt", compiled=True)
m.eval()
g = torch.Generator().manual_seed(1)
B = 3
inputs = {"images": torch.randn(B, 16, 48, generator=g), "images_positions": torch.arange(16).expand(B, -1),
          "spectra": torch.randn(B, 8, 10, generator=g), "spectra_positions": torch.randn(B, 8, 1, generator=g)}
with torch.no_grad():
    emb = m.generate_embeddings(dict(inputs))
    outs, _ = m(dict(inputs))
np.savez(f"{out}/mm_lora.npz", **{k: v.numpy() for k, v in inputs.items()},
         emb_images=emb["images"].numpy(), emb_spectra=emb["spectra"].numpy(),
         pred_images=outs["images"].numpy(), pred_spectra=outs["spectra"].numpy())

mods1 = [ModalityConfig("images", 4 * 4 * 3, 1, 4, True)]
reg1 = ModalityRegistry(mods1)
args1 = dict(block_size=24, n_layer=4, n_head=4, n_embd=32, n_chan=3, dropout=0.0, bias=True,
             attn_type="causal", tokeniser="aim")
m1 = GPT(GPTConfig(**args1), reg1, master_process=False)
save(m1, args1, reg1, f"{out}/single.pt")
m1.eval()
x = torch.randn(B, 16, 48, generator=g)
seq = {"images": x.clone(), "images_positions": torch.arange(16).expand(B, -1)}
new = []
with torch.no_grad():
    emb1 = m1.generate_embeddings(dict(seq))["images"]
    for _ in range(6):  # next-token loop (the reference's generate does not extend positions)
        o, _ = m1(seq)
        tok = o["images"][:, -1:]
        new.append(tok)
        n = seq["images"].shape[1] + 1
        seq = {"images": torch.cat([seq["images"], tok], 1), "images_positions": torch.arange(n).expand(B, -1)}
np.savez(f"{out}/single.npz", images=x.numpy(), emb=emb1.numpy(), generated=torch.cat(new, 1).numpy())
'''


def run_reference(python: str, out: Path, ref_path: str | None) -> None:
    env = dict(os.environ)
    if ref_path:
        env["PYTHONPATH"] = ref_path + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([python, "-c", REFERENCE_SIDE, str(out)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"reference side failed:\n{proc.stderr[-3000:]}")


def compare(out: Path) -> dict[str, float]:
    from astropt.model import AstroPT, convert_reference_checkpoint

    res: dict[str, float] = {}
    r = np.load(out / "mm_lora.npz")
    batch = {k: torch.from_numpy(r[k]) for k in ("images", "images_positions", "spectra", "spectra_positions")}
    for name in ("mm_lora.pt", "mm_lora_compiled.pt"):
        for how in ("file", "converted"):
            src = out / name
            model = AstroPT.from_pretrained(
                src if how == "file" else convert_reference_checkpoint(src, out / f"converted_{src.stem}")
            )
            emb = model.embed(batch)
            with torch.no_grad():
                h, seq = model(batch)
                pred = model.ar_predictions(h, seq, batch)
            res[f"{src.stem} ({how}): embeddings"] = max(
                float(np.abs(emb[m].numpy() - r[f"emb_{m}"]).max()) for m in ("images", "spectra"))
            res[f"{src.stem} ({how}): next-token predictions"] = max(
                float(np.abs(pred[m][0].numpy() - r[f"pred_{m}"]).max()) for m in ("images", "spectra"))
    s = np.load(out / "single.npz")
    model = AstroPT.from_pretrained(out / "single.pt")
    b = {"images": torch.from_numpy(s["images"]), "images_positions": torch.arange(16).expand(3, -1)}
    res["single: embeddings"] = float(np.abs(model.embed(b)["images"].numpy() - s["emb"]).max())
    for cache in (True, False):
        gen = model.generate(b, "images", 6, use_cache=cache)
        res[f"single: 6 generated tokens (cache={cache})"] = float(np.abs(gen.numpy() - s["generated"]).max())
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", help="a Python that imports the reference astropt")
    parser.add_argument("--ref-path", help="folder holding the reference package (prepended to PYTHONPATH)")
    parser.add_argument("--refenv", default="benchmarks/out/refenv", help="reference venv to create/use")
    args = parser.parse_args()
    python = args.python
    if python is None:
        if args.ref_path:
            python = sys.executable
        else:
            from benchmarks.refenv import ensure_refenv

            python = str(ensure_refenv(Path(args.refenv)))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run_reference(python, out, args.ref_path)
        res = compare(out)
    width = max(map(len, res))
    print(f"{'max |ours - reference|':{width}s}  value")
    for k, v in res.items():
        print(f"{k:{width}s}  {v:.2e}")
    print(json.dumps({"reference_parity": res}))


if __name__ == "__main__":
    main()
