"""PyTorch on the GPU for the GPU proof (scripts/device/prove-containers.sh).

    python3 torch_check.py matmul     a bf16 matmul checked against float32 on the CPU
    python3 torch_check.py compile    torch.compile of a small function (Inductor generates a Triton kernel,
                                      which Triton compiles and loads through libcuda)
Prints one line starting with "ok" and exits 0, or raises.
"""

import sys

import torch


def matmul() -> str:
    a = torch.randn(512, 512)
    b = torch.randn(512, 512)
    got = (a.cuda().bfloat16() @ b.cuda().bfloat16()).float().cpu()
    err = (got - a @ b).abs().max().item()
    assert err < 2.0, f"bf16 matmul differs from the CPU's by {err}"
    return f"ok matmul on {torch.cuda.get_device_name(0)}, max abs error {err:.3f}"


def compile_() -> str:
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x) * torch.sin(x) + 1.0

    x = torch.randn(1 << 20, device="cuda")
    got = torch.compile(f)(x)
    err = (got - f(x)).abs().max().item()
    assert err < 1e-4, f"compiled result differs by {err}"
    return f"ok torch.compile (Triton {__import__('triton').__version__}) on {torch.cuda.get_device_name(0)}"


if __name__ == "__main__":
    print({"matmul": matmul, "compile": compile_}[sys.argv[1]]())
