#!/usr/bin/env python3
"""llamac's fused distillation head (ops.h lmhead_kd) against torchtune's
ForwardKLLoss and TRL's generalized_jsd_loss on the same logits.

    python scripts/test_kd_ref.py [--llamac build/llamac] [--work build/test_kd_ref]
                                  [--fixture tests/fixtures/kd/kd_ref.bin]

For each case below this script draws student and teacher logits (N, V),
float32, with a quarter of the labels -100, and has the library compute the
mixed loss (1 - kd_ratio) * CE + kd_ratio * KD (both means over the rows
not ignored, as torchtune's recipe and TRL reduce them), each row's KD and
CE, and d loss / d student logits (autograd). `build/tests kd_ref` (beside
--llamac) with LLAMAC_KD_REF naming the case file runs lmhead_kd on the
same logits through identity heads (D = V, w = I: x are the logits) and
must agree within 1e-6 (tests/test_kd.c).

  torchtune 0.6.1 ForwardKLLoss: no temperature of its own, so tau != 1 is
    given to it as logits / tau (what a caller does), times tau^2 where the
    case has T^2. Its value is the cross-entropy H(p_t, p_s) = KL + H(p_t);
    llamac logs KL, so the teacher's entropy (computed here with torch) is
    subtracted from the value (the gradient is the same). torchtune's package
    __init__ wants torchao, which its --no-deps install lacks: kd_losses.py
    (torch only) is loaded from the installed package by path.
  TRL 1.16 GKDTrainer.generalized_jsd_loss (trl.experimental.gkd): beta 0,
    0.5, 0.9, 1 (0 and 1 are its forward and reverse KL) at tau 1 and 2;
    no T^2 (TRL has none).

--fixture writes the first case to that path as well (the committed
tests/fixtures/kd/kd_ref.bin that `make test` checks without Python).
Prints PASS/FAIL per case and "test_kd_ref: N passed, M failed".
"""
import argparse
import importlib.util
import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from refcheck import check, summary  # noqa: E402

KD_FKL, KD_RKL, KD_JSD = 0, 1, 2
MAGIC, VERSION = 0x52444B4C, 1  # "LKDR", tests/test_kd.c

# (library, name, div, tau, beta, kd_ratio, t2, N, V, seed)
CASES = [
    ("torchtune", "torchtune fkl tau 1, kd_ratio 0.5", KD_FKL, 1.0, 0.0, 0.5, 0, 12, 50, 1),
    ("torchtune", "torchtune fkl tau 1, kd only", KD_FKL, 1.0, 0.0, 1.0, 0, 9, 128, 2),
    ("torchtune", "torchtune fkl tau 2 T^2, kd_ratio 0.25", KD_FKL, 2.0, 0.0, 0.25, 1, 12, 50, 3),
    ("trl", "trl gjsd beta 0 (fkl), tau 1", KD_JSD, 1.0, 0.0, 0.5, 0, 12, 50, 4),
    ("trl", "trl gjsd beta 0.5, tau 1", KD_JSD, 1.0, 0.5, 0.5, 0, 12, 50, 5),
    ("trl", "trl gjsd beta 0.9, tau 1", KD_JSD, 1.0, 0.9, 0.5, 0, 12, 50, 6),
    ("trl", "trl gjsd beta 1 (rkl), tau 1", KD_JSD, 1.0, 1.0, 0.5, 0, 12, 50, 7),
    ("trl", "trl gjsd beta 0.5, tau 2", KD_JSD, 2.0, 0.5, 0.7, 0, 12, 50, 8),
    ("trl", "trl gjsd beta 0.9, tau 0.7, kd only", KD_JSD, 0.7, 0.9, 1.0, 0, 9, 128, 9),
    ("trl", "trl gjsd beta 1 (rkl), tau 2", KD_JSD, 2.0, 1.0, 0.5, 0, 12, 50, 10),
]


def torchtune_kd_module():
    """torchtune.modules.loss.kd_losses loaded by path: torchtune's __init__ needs torchao."""
    spec = importlib.util.find_spec("torchtune")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("torchtune is not installed (pip install --no-deps torchtune==0.6.1)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "modules", "loss", "kd_losses.py")
    ks = importlib.util.spec_from_file_location("torchtune_kd_losses", path)
    mod = importlib.util.module_from_spec(ks)
    ks.loader.exec_module(mod)
    return mod


def torchtune_version():
    from importlib.metadata import version
    return version("torchtune")


def reference(lib, div, tau, beta, ratio, t2, s, t, labels):
    """The library's mixed loss, row KD, row CE and d loss / d s (float64 out)."""
    s = s.clone().requires_grad_(True)
    valid = labels != -100
    nt = int(valid.sum())
    ce_rows = F.cross_entropy(s, labels, ignore_index=-100, reduction="none")
    ce = ce_rows.sum() / nt
    f = tau * tau if t2 else 1.0
    if lib == "torchtune":
        kd_mod = torchtune_kd_module()
        loss_fn = kd_mod.ForwardKLLoss(ignore_index=-100)
        kd_h = loss_fn(s / tau, t / tau, labels)  # H(p_t, p_s), mean over valid rows
        pt = F.softmax(t / tau, dim=-1, dtype=torch.float32)
        ent_rows = -(pt * F.log_softmax(t / tau, dim=-1)).sum(-1)
        ent = (ent_rows * valid).sum() / nt
        total = (1 - ratio) * ce + ratio * f * kd_h
        value = float(total) - ratio * f * float(ent)  # the teacher's entropy out: KL
        rows = []
        for n in range(s.shape[0]):
            if not valid[n]:
                rows.append(0.0)
                continue
            h = loss_fn(s[n:n + 1].detach() / tau, t[n:n + 1] / tau, labels[n:n + 1])
            rows.append(float(h) - float(ent_rows[n]))
    else:
        from trl.experimental.gkd.gkd_trainer import GKDTrainer
        jsd = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=tau,
                                              reduction="batchmean")
        total = (1 - ratio) * ce + ratio * f * jsd
        value = float(total)
        with torch.no_grad():
            per = GKDTrainer.generalized_jsd_loss(s, t, beta=beta, temperature=tau, reduction="none").sum(-1)
        rows = [float(per[n]) if valid[n] else 0.0 for n in range(s.shape[0])]
    total.backward()
    ce_ref = [float(ce_rows[n]) if valid[n] else 0.0 for n in range(s.shape[0])]
    return value, np.array(rows), np.array(ce_ref), s.grad.double().numpy()


def write_case(path, name, div, tau, beta, ratio, t2, s, t, labels, loss, rkd, rce, grad):
    N, V = s.shape
    tg = [int(x) if int(x) != -100 else -1 for x in labels]  # LC_IGNORE
    with open(path, "wb") as f:
        f.write(struct.pack("<2I4i4f", MAGIC, VERSION, N, V, div, t2, tau, beta, 1 - ratio, ratio))
        f.write(name.encode()[:64].ljust(64, b"\0"))
        f.write(np.array(tg, "<i4").tobytes())
        f.write(s.numpy().astype("<f4").tobytes())
        f.write(t.numpy().astype("<f4").tobytes())
        f.write(struct.pack("<d", loss))
        f.write(rkd.astype("<f8").tobytes())
        f.write(rce.astype("<f8").tobytes())
        f.write(grad.astype("<f8").tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llamac", default="build/llamac")
    ap.add_argument("--work", default="build/test_kd_ref")
    ap.add_argument("--fixture", help="also write the first case here")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(1)
    import trl
    print(f"torch {torch.__version__}, torchtune {torchtune_version()}, trl {trl.__version__}")
    tests = os.path.join(os.path.dirname(a.llamac) or ".", "tests")
    for i, (lib, name, div, tau, beta, ratio, t2, N, V, seed) in enumerate(CASES):
        try:
            g = torch.Generator().manual_seed(seed)
            s = torch.randn(N, V, generator=g) * 2.0
            t = torch.randn(N, V, generator=g) * 2.5
            labels = torch.randint(0, V, (N,), generator=g)
            labels[2::4] = -100
            loss, rkd, rce, grad = reference(lib, div, tau, beta, ratio, t2, s, t, labels)
            path = os.path.join(a.work, f"case{i}.bin")
            write_case(path, name, div, tau, beta, ratio, t2, s, t, labels, loss, rkd, rce, grad)
            if i == 0 and a.fixture:
                write_case(a.fixture, name, div, tau, beta, ratio, t2, s, t, labels, loss, rkd, rce, grad)
        except Exception as err:  # one broken case is one failure, the others still run
            check(name, False, f"reference side raised {type(err).__name__}: {str(err)[:300]}")
            continue
        r = subprocess.run([tests, "kd_ref"], capture_output=True, text=True, env=dict(os.environ, LLAMAC_KD_REF=path))
        line = [x.strip() for x in r.stdout.splitlines() if x.strip().startswith(name)]
        if line:
            print("   ", line[0])
        check(name, r.returncode == 0 and "PASS kd_ref" in r.stdout, (r.stdout + r.stderr)[-600:])
    return summary("test_kd_ref")


if __name__ == "__main__":
    sys.exit(main())
