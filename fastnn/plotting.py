"""plot_history: a History's loss and metric curves as a PNG (matplotlib, optional)."""


def plot_history(history, path="history.png", title=None):
    """Draws each logged quantity of a fit (loss, metrics, and their val_ twins on the same
    axes) per epoch and saves the figure to `path`. Returns the path. Needs matplotlib
    (`pip install matplotlib`); raises ImportError naming it otherwise."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict) or not logs:
        raise ValueError("history: expected a History returned by fit (or its .history dict) "
                         "with at least one logged quantity")
    try:
        # A bare Figure on an Agg canvas, not pyplot: matplotlib.use would switch the
        # caller's backend for the rest of the session (plt.show, notebooks).
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plot_history needs matplotlib: pip install matplotlib") from None
    names = [k for k in logs if not k.startswith("val_")]
    names += [k[4:] for k in logs if k.startswith("val_") and k[4:] not in names]
    fig = Figure(figsize=(4.5 * len(names), 3.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), squeeze=False)
    epochs = getattr(history, "epoch", None)
    for ax, name in zip(axes[0], names):
        for key, style in ((name, "-"), ("val_" + name, "--")):
            if key in logs:
                values = logs[key]
                xs = [e + 1 for e in epochs] if epochs and len(epochs) == len(values) else range(1, len(values) + 1)
                ax.plot(list(xs), values, style, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        if name == "loss" and all(v > 0 for v in logs.get("loss", [1])):
            ax.set_yscale("log")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
