"""Draw the guide's pictures into docs/img/ (or the folder given as the first argument).

    python docs/figures.py            # run after changing a picture; commit the PNGs

Every picture is computed from the layout it shows (the same index formulas as the kernels), not
drawn by hand; tests/test_docs.py runs this script so that it keeps working.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

IMAGE_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]


def grid(ax, labels, highlight=(), colour="#f2c14e", title=""):
    """A matrix of labelled cells; cells in highlight (row, column) are filled."""
    rows, cols = len(labels), len(labels[0])
    for r in range(rows):
        for c in range(cols):
            fill = colour if (r, c) in highlight else "white"
            ax.add_patch(Rectangle((c, rows - 1 - r), 1, 1, facecolor=fill, edgecolor="black"))
            ax.text(c + 0.5, rows - 0.5 - r, labels[r][c], ha="center", va="center", fontsize=10)
    ax.set_xlim(-0.1, cols + 0.1)
    ax.set_ylim(-0.1, rows + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)


def conv_example(out):
    """The 4x4 input, the 3x3 filter and the 2x2 output: output z12 sees the window at (0, 1)."""
    x = [[f"$x_{{{r}{c}}}$" for c in range(1, 5)] for r in range(1, 5)]
    w = [[f"$w_{{{r}{c}}}$" for c in range(1, 4)] for r in range(1, 4)]
    z = [[f"$z_{{{r}{c}}}$" for c in range(1, 3)] for r in range(1, 3)]
    window = {(r, c) for r in range(3) for c in range(1, 4)}
    fig, axes = plt.subplots(1, 3, figsize=(8, 2.8), gridspec_kw={"width_ratios": [4, 3, 2]})
    grid(axes[0], x, window, title="input x (4x4)")
    grid(axes[1], w, {(r, c) for r in range(3) for c in range(3)}, title="filter w (3x3)")
    grid(axes[2], z, {(0, 1)}, title="output z (2x2)")
    fig.suptitle("$z_{12} = b + \\sum_{k,l} w_{kl}\\, x_{k,l+1}$: the filter over the window one column right",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "conv_example.png", dpi=90)
    plt.close(fig)


def im2col(out):
    """im2col for the same example: column p of the unfolded matrix is output pixel p's window."""
    H = W = 4
    K = 3
    OH = OW = H - K + 1
    col = [[f"$x_{{{i + kh + 1}{j + kw + 1}}}$" for i in range(OH) for j in range(OW)]
           for kh in range(K) for kw in range(K)]
    wrow = [[f"$w_{{{kh + 1}{kw + 1}}}$" for kh in range(K) for kw in range(K)]]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.6), gridspec_kw={"width_ratios": [9, 4, 4]})
    grid(axes[0], wrow, {(0, k) for k in range(9)}, "#9ecae1", "w as a row (1 x 9)")
    grid(axes[1], col, {(k, 1) for k in range(9)}, title="col (9 x 4): column p = window of pixel p")
    grid(axes[2], [["$z_{11}$", "$z_{12}$", "$z_{21}$", "$z_{22}$"]], {(0, 1)}, title="z = w col (1 x 4)")
    fig.tight_layout()
    fig.savefig(out / "im2col.png", dpi=90)
    plt.close(fig)


def lanes(out, N=8, V=4, H=2, W=3):
    """Where each image's pixels live: NCHW (one image after the other) against the batch-lane
    layout [B][C][H][W][V] (image n = b*V + v sits in lane v of block b, next to its neighbours)."""
    E = H * W   # one channel per image here
    fig, axes = plt.subplots(2, 1, figsize=(11, 3.2))
    for ax, title, where in (
        (axes[0], "NCHW: address = n*H*W + h*W + w", lambda n, e: n * E + e),
        (axes[1], f"batch lanes, V = {V}: address = ((b*H + h)*W + w)*V + v, with n = b*V + v",
         lambda n, e: ((n // V) * E + e) * V + n % V),
    ):
        for n in range(N):
            for e in range(E):
                a = where(n, e)
                ax.add_patch(Rectangle((a, 0), 1, 1, facecolor=IMAGE_COLOURS[n % len(IMAGE_COLOURS)],
                                       edgecolor="white"))
                ax.text(a + 0.5, 0.5, f"{n}\n{e // W},{e % W}", ha="center", va="center", fontsize=6,
                        color="white")
        ax.set_xlim(0, N * E)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_xticks(range(0, N * E + 1, V))
        ax.set_title(title, fontsize=10)
    axes[1].set_xlabel("memory address (in elements); each cell: image n, pixel (h, w)")
    fig.tight_layout()
    fig.savefig(out / "lanes.png", dpi=90)
    plt.close(fig)


def main(argv):
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "img"
    out.mkdir(parents=True, exist_ok=True)
    for draw in (conv_example, im2col, lanes):
        draw(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
