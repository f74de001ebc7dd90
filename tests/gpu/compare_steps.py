#!/usr/bin/env python3
"""Compares two dump_step outputs (tests/gpu/dump_step.c): the loss and every parameter's
gradient, norm-wise relative error against the first (the CPU reference).
   compare_steps.py CPU.bin GPU.bin LOSS_TOL GRAD_TOL LABEL
Prints PASS/FAIL lines and the worst gradient."""
import sys
import numpy as np


def read(path):
    with open(path, "rb") as f:
        header = f.readline().split()
        loss, count = float(header[1]), int(header[3])
        grads = {}
        for _ in range(count):
            name, n = f.readline().split()
            grads[name.decode()] = np.frombuffer(f.read(4 * int(n)), dtype=np.float32).astype(np.float64)
            f.read(1)
    return loss, grads


loss_tol, grad_tol, label = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
try:
    cpu_loss, cpu = read(sys.argv[1])
    gpu_loss, gpu = read(sys.argv[2])
except (OSError, ValueError, IndexError) as error:
    print(f"FAIL gpu {label}: no step to compare ({error})")
    sys.exit(1)
err = abs(gpu_loss - cpu_loss) / abs(cpu_loss)
print(("PASS" if err <= loss_tol else "FAIL") + f" gpu {label}: loss after one step"
      + ("" if err <= loss_tol else f": cpu {cpu_loss:.7f} gpu {gpu_loss:.7f}, relative {err:.3g} > {loss_tol}"))
worst, worst_name = 0.0, ""
for name, g in cpu.items():
    d = gpu.get(name)
    e = np.inf if d is None or d.shape != g.shape else np.linalg.norm(d - g) / max(np.linalg.norm(g), 1e-30)
    if e > worst:
        worst, worst_name = e, name
ok = worst <= grad_tol and set(cpu) == set(gpu)
print(("PASS" if ok else "FAIL") + f" gpu {label}: every gradient ({len(cpu)} tensors) after one step"
      + ("" if ok else f": worst {worst_name} relative {worst:.3g} > {grad_tol}"))
print(f"    loss cpu {cpu_loss:.7f} gpu {gpu_loss:.7f}; worst gradient {worst_name} {worst:.3g}")
