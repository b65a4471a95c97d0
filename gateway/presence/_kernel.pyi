# The compiled inner loop of the position solver (_kernel.c); optional, see setup.py.
from typing_extensions import Buffer

def gauss_newton(
    rx: Buffer,
    ry: Buffer,
    half_k: Buffer,
    log_est: Buffer,
    weight: Buffer,
    x: Buffer,
    y: Buffer,
    b: Buffer,
    var: Buffer,
    cost: Buffer,
    width: int,
    iterations: int,
    prior_db: float,
    /,
) -> None: ...
