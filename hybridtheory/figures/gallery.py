"""The default figures: compute (numbers) and plot (PNG + CSV of the plotted numbers)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import bounds  # noqa: E402
from ..measurement import displacement_variance, epoch_complexity  # noqa: E402
from ..objectives import make  # noqa: E402
from ..runner import METHODS, RunConfig, finite_mean, run  # noqa: E402
from . import Figure, atomic_savefig, write_csv, write_json  # noqa: E402


def _write_outputs(fig, out: Path, name: str, header: list[str], rows: list[list], summary: dict | None = None) -> None:
    """A figure's files: ``name``.png (the figure is closed after), ``name``.csv and, given a summary, ``name``.json."""
    atomic_savefig(fig, out / f"{name}.png")
    plt.close(fig)
    write_csv(out / f"{name}.csv", header, rows)
    if summary is not None:
        write_json(out / f"{name}.json", summary)


def _epochs_vs_inverse_eps(ax, ylabel: str, title: str, fontsize: int) -> None:
    """Log-log axes of epochs to accuracy eps against 1/eps, plain numbers on the x ticks."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$1/\varepsilon$")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=fontsize)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(alpha=0.3, which="both")


METHOD_STYLE = {"hybrid": ("C0", "-"), "fo-rr": ("C1", "--"), "zo-rr": ("C2", "-."), "hybrid-sgd": ("C3", ":")}


# -- convergence ------------------------------------------------------------------------------------
def _convergence_params(quick: bool) -> dict:
    return {"problems": {"hyb": {}, "lora": {}, "quadratic": {}}, "methods": list(METHODS),
            "epochs": 60 if quick else 400, "replicates": 3 if quick else 8, "mu": 1e-3, "seed": 0,
            "step": "Theorem 1 caps (eta_x, eta_y) = (1/(8 n Lhat_x), 1/(4 n Lhat_y))"}


def _convergence_compute(p: dict) -> dict:
    out = {}
    for name, kw in p["problems"].items():
        problem = make(name, **kw)
        eta_x, eta_y = bounds.step_caps(problem.constants(), problem.n)
        curves = {}
        for method in p["methods"]:
            cfg = RunConfig(method=method, eta_x=eta_x, eta_y=eta_y, mu=p["mu"], epochs=p["epochs"],
                            replicates=p["replicates"], seed=p["seed"])
            g = run(problem, cfg).grad_sq
            curves[method] = {"median": np.median(g, 1), "q10": np.quantile(g, 0.1, 1), "q90": np.quantile(g, 0.9, 1)}
        out[name] = {"eta_x": eta_x, "eta_y": eta_y, "n": problem.n, "dx": problem.dx, "dy": problem.dy,
                     "curves": curves}
    return out


def _convergence_plot(res: dict, out: Path) -> None:
    data = res["data"]
    fig, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 3.4), squeeze=False)
    rows = []
    for ax, (name, d) in zip(axes[0], data.items()):
        for method, c in d["curves"].items():
            color, ls = METHOD_STYLE[method]
            ep = np.arange(len(c["median"]))
            ax.plot(ep, c["median"], color=color, ls=ls, label=method)
            ax.fill_between(ep, c["q10"], c["q90"], color=color, alpha=0.15, lw=0)
            rows += [[name, method, int(e), m, lo, hi] for e, m, lo, hi in zip(ep, c["median"], c["q10"], c["q90"])]
        ax.set_yscale("log")
        ax.set_title(f"{name} (n={d['n']}, $d_x$={d['dx']}, $d_y$={d['dy']})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(r"$\|\nabla F(z_t)\|^2$ (median, 10-90% band)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Convergence at Theorem 1's step caps", fontsize=11)
    _write_outputs(fig, out, "convergence",
                   ["problem", "method", "epoch", "grad_sq_median", "grad_sq_q10", "grad_sq_q90"], rows)


# -- epoch complexity -------------------------------------------------------------------------------
def _epoch_params(quick: bool) -> dict:
    # Each series: label -> (family, family parameters, eps grid, step_scale). step_scale = 1 is Corollary 1
    # exactly (a theorem check: T_emp/T_bound <= 1 expected); > 1 multiplies both step sizes (still under
    # Theorem 1's caps) to reach smaller eps in seconds: it measures the shape of T(eps) only.
    return {
        "series": {
            "ramp (Corollary 1 schedule)": {"family": "ramp", "family_params": {"dx": 2, "delta": 0.25},
                                            "eps_grid": [0.4, 0.3, 0.25] if quick else [0.4, 0.3, 0.2, 0.15],
                                            "step_scale": 1.0},
            "ramp (steps x40)": {"family": "ramp", "family_params": {"dx": 2, "delta": 0.25},
                                 "eps_grid": [0.3, 0.2, 0.14] if quick else [0.3, 0.2, 0.14, 0.1, 0.07],
                                 "step_scale": 40.0},
            "pl (steps x100)": {"family": "pl", "family_params": {"dx": 2, "delta": 1.0},
                                "eps_grid": [0.3, 0.2, 0.14] if quick else [0.3, 0.2, 0.14, 0.1, 0.07],
                                "step_scale": 100.0},
        },
        "replicates": 4 if quick else 8, "seed": 0, "law": "sphere"}


def _epoch_compute(p: dict) -> dict:
    out = {}
    for label, sp in p["series"].items():
        m = epoch_complexity(sp["family"], sp["eps_grid"], sp["family_params"], replicates=p["replicates"],
                             seed=p["seed"], step_scale=sp["step_scale"], law=p["law"])
        out[label] = {"slope": m.measured, "bound_slope": m.bound, **m.details}
    return out


def _sweep_cached(out: Path) -> dict | None:
    from .sweep import load_sweep
    res = load_sweep(out)
    return None if res is None else res["data"]


def _epoch_plot(res: dict, out: Path) -> None:
    data = dict(res["data"])
    sweep = _sweep_cached(out)
    if sweep is not None:
        data[f"ramp sweep, d_x={sweep['family_params']['dx']} (steps x{sweep['step_scale']:g})"] = sweep
    fig, ax = plt.subplots(figsize=(9.6, 4.4))
    rows, summary = [], {}
    drawn_bounds: list[tuple] = []     # a step-scaled series shares Corollary 1's T_bound with its family: draw it once
    for k, (fam, d) in enumerate(data.items()):
        color = f"C{k}"
        eps = np.array([r["eps"] for r in d["rows"]])
        t = np.array([r["T_emp_mean"] for r in d["rows"]])
        lo = np.array([r["T_emp_min"] for r in d["rows"]])
        hi = np.array([r["T_emp_max"] for r in d["rows"]])
        tb = np.array([r["T_bound"] for r in d["rows"]], float)
        ci = d["slope_ci95"]
        ax.errorbar(1 / eps, t, yerr=[t - lo, hi - t], fmt="o-", color=color, capsize=3,
                    label=f"{fam}: slope {d['slope']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]")
        key = (d.get("family"), tuple(sorted((d.get("family_params") or {}).items())))
        prev = [b for b in drawn_bounds if b[0] == key]
        new = [(e, v) for e, v in zip(eps, tb) if not any(np.isclose(e, pe) and np.isclose(v, pv)
                                                         for b in prev for pe, pv in b[1])]
        if new:
            ne, nv = np.array([e for e, _ in new]), np.array([v for _, v in new])
            ax.plot(1 / ne, nv, ls="--", color=color, alpha=0.7,
                    label=f"Corollary 1 $T_{{bound}}$, {d.get('family')} (slope {d['bound_slope']:.2f})"
                    + ("" if len(new) == len(eps) else "; shared with the series above"))
            drawn_bounds.append((key, list(zip(eps, tb))))
        for r in d["rows"]:
            rows.append([fam, r["eps"], r["T_emp_mean"], r["T_emp_min"], r["T_emp_max"], r["T_bound"],
                         r["ratio_max"], r["all_reached"], d.get("step_scale", 1.0)])
        summary[fam] = {"family": d.get("family"), "slope": d["slope"], "slope_ci95": ci, "bound_slope": d["bound_slope"],
                        "largest_empirical_over_bound": d["ratio_max"], "all_seeds_reached_eps": d["all_reached"],
                        "theorem_check": d.get("theorem_check", False), "step_scale": d.get("step_scale", 1.0),
                        "eps_grid": eps.tolist(), "family_params": d.get("family_params", {}),
                        "replicates": d.get("replicates")}
    _epochs_vs_inverse_eps(ax, r"epochs to $\|\nabla F(z_t)\|\leq\varepsilon$",
                           "Epoch complexity: measured vs Corollary 1", fontsize=11)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    _write_outputs(fig, out, "epoch_complexity", ["family", "eps", "T_emp_mean", "T_emp_min", "T_emp_max", "T_bound",
                                                  "ratio_max", "all_reached", "step_scale"], rows, summary)


# -- step-size plane --------------------------------------------------------------------------------
def _plane_params(quick: bool) -> dict:
    exps = range(-2, 9, 2) if quick else range(-2, 9)
    return {"problem": "hyb", "problem_params": {}, "multipliers": [2.0 ** k for k in exps],
            "epochs": 60 if quick else 200, "replicates": 2 if quick else 4, "mu": 1e-3, "seed": 0}


def _plane_compute(p: dict) -> dict:
    problem = make(p["problem"], **p["problem_params"])
    cx, cy = bounds.step_caps(problem.constants(), problem.n)
    mult, R = p["multipliers"], p["replicates"]
    cells = [(a, b) for a in mult for b in mult]
    ex = [cx * a for a, _ in cells for _ in range(R)]
    ey = [cy * b for _, b in cells for _ in range(R)]
    cfg = RunConfig(method="hybrid", eta_x=ex, eta_y=ey, mu=p["mu"], epochs=p["epochs"], replicates=len(ex),
                    seed=p["seed"])
    traj = run(problem, cfg)
    g = traj.grad_sq
    tail = g[-max(1, p["epochs"] // 5):].mean(0)          # mean ||grad F||^2 over the last 20% of epochs
    # diverged replicates (non-finite iterate) are left out of the cell mean and counted instead
    final = finite_mean(tail.reshape(len(cells), R), traj.diverged.reshape(len(cells), R))
    diverged = traj.diverged.reshape(len(cells), R).mean(1)
    return {"cap_x": cx, "cap_y": cy, "multipliers": mult, "final_grad_sq": final.reshape(len(mult), len(mult)),
            "diverged_fraction": diverged.reshape(len(mult), len(mult)), "initial_grad_sq": float(g[0].mean())}


def _plane_plot(res: dict, out: Path) -> None:
    d = res["data"]
    mult = np.array(d["multipliers"])
    z = np.array(d["final_grad_sq"], float)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    im = ax.pcolormesh(np.arange(len(mult) + 1), np.arange(len(mult) + 1), np.log10(z).T, cmap="viridis", shading="flat")
    fig.colorbar(im, ax=ax, label=r"$\log_{10}$ mean $\|\nabla F\|^2$, last 20% of epochs")
    ticks = np.arange(len(mult)) + 0.5
    labels = [f"$2^{{{int(round(math.log2(m)))}}}$" for m in mult]
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    # each cell is one (multiplier_x, multiplier_y) sample drawn at its centre: the cap is the centre of the
    # column / row with multiplier 1 (cells up to and including it are covered by Theorem 1)
    cap = float(np.interp(0.0, np.log2(mult), np.arange(len(mult)))) + 0.5
    ax.axvline(cap, color="w", ls="--")
    ax.axhline(cap, color="w", ls="--")
    ax.set_xlabel(r"$\eta_x$ / cap $1/(8n\hat L_x)$")
    ax.set_ylabel(r"$\eta_y$ / cap $1/(4n\hat L_y)$")
    ax.set_title("HYB: where hybrid RR converges vs Theorem 1's caps\n(dashed: the caps, through the cells at multiplier 1;"
                 " the theorem covers the lower-left box)",
                 fontsize=9)
    div = np.array(d.get("diverged_fraction", np.zeros_like(z)), float)
    rows = [[float(a * d["cap_x"]), float(b * d["cap_y"]), float(a), float(b), float(z[i, j]), float(div[i, j])]
            for i, a in enumerate(mult) for j, b in enumerate(mult)]
    _write_outputs(fig, out, "step_plane", ["eta_x", "eta_y", "mult_x", "mult_y", "final_grad_sq", "diverged_fraction"],
                   rows)


# -- variance slope ---------------------------------------------------------------------------------
def _variance_params(quick: bool) -> dict:
    return {"problem": "hyb", "problem_params": {}, "methods": ["hybrid", "zo-rr", "fo-rr", "hybrid-sgd"],
            "etas": np.logspace(-4, -2, 4 if quick else 6).tolist(), "replicates": 300 if quick else 2000,
            "mu_ratio": 0.1, "seed": 0}


def _variance_compute(p: dict) -> dict:
    problem = make(p["problem"], **p["problem_params"])
    out = {}
    for m in p["methods"]:
        meas = displacement_variance(problem, m, p["etas"], p["mu_ratio"], p["replicates"], p["seed"])
        out[m] = {"slope": meas.measured, "predicted": meas.bound, "variance": meas.details["variance"]}
    return {"etas": p["etas"], "methods": out}


def _variance_plot(res: dict, out: Path) -> None:
    d = res["data"]
    etas = np.array(d["etas"])
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    rows = []
    markers = {"hybrid": ("o", 9, "none"), "zo-rr": ("^", 6, None), "fo-rr": ("s", 6, None), "hybrid-sgd": ("x", 7, None)}
    # hybrid and hybrid-sgd have nearly equal variances: hybrid is drawn last, with large open circles
    for m in sorted(d["methods"], key=lambda k: k == "hybrid"):
        r = d["methods"][m]
        color, ls = METHOD_STYLE[m]
        mk, ms, face = markers.get(m, ("o", 6, None))
        ax.plot(etas, r["variance"], marker=mk, ms=ms, mfc=face if face else color, color=color, ls=ls,
                zorder=3 if m == "hybrid" else 2,
                label=f"{m}: slope {r['slope']:.2f} (mechanism: {r['predicted']:.0f})")
        rows += [[m, float(e), float(v), r["slope"], r["predicted"]] for e, v in zip(etas, r["variance"])]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"step size $\eta$ ($\eta_x=\eta_y$)")
    ax.set_ylabel("variance of one-epoch displacement")
    ax.set_title("Why ZO noise forces $\\eta\\propto\\varepsilon^2$: variance $\\propto\\eta^2$ vs FO-RR's $\\eta^4$",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _write_outputs(fig, out, "variance_slope", ["method", "eta", "variance", "fitted_slope", "predicted_slope"], rows)


# -- local smoothness -------------------------------------------------------------------------------
def _local_params(quick: bool) -> dict:
    return {"functions": {"y4": {"L1": 1.0}, "power": {"k": 3, "L1": 1.0}, "exp": {}, "cosh": {}, "logistic": {},
                          "softmax_ce": {"k": 4}},
            "n_points": 400 if quick else 3000, "seed": 0}


def _local_compute(p: dict) -> dict:
    from ..objectives.catalogue import CATALOGUE, local_smoothness_samples
    out = {}
    for name, kw in p["functions"].items():
        if name not in CATALOGUE:
            raise ValueError(f"catalogue has no function {name!r}; known: {sorted(CATALOGUE)}")
        s = local_smoothness_samples(name, p["n_points"], p["seed"], **kw)
        out[name] = {k: s[k] for k in ("grad_norm", "hess_norm", "bound", "L0", "L1")}
    return out


def _local_plot(res: dict, out: Path) -> None:
    d = res["data"]
    k = len(d)
    cols = 3
    fig, axes = plt.subplots(math.ceil(k / cols), cols, figsize=(4 * cols, 3.3 * math.ceil(k / cols)), squeeze=False)
    rows = []
    for ax, (name, s) in zip(axes.flat, d.items()):
        g, h = np.array(s["grad_norm"]), np.array(s["hess_norm"])
        ax.scatter(g, h, s=4, alpha=0.4, label="samples")
        gg = np.linspace(0, g.max(), 200)
        ax.plot(gg, s["L0"] + s["L1"] * gg, "r-",
                label=f"$L_0+L_1\\|\\nabla f\\|$ with $(L_0, L_1)$ = ({float(s['L0']):.3g}, {float(s['L1']):.3g})")
        worst = float(np.max(h / np.array(s["bound"])))
        kw = res["params"]["functions"].get(name, {}) if "params" in res else {}
        args = ", ".join(f"{k}={v:g}" for k, v in kw.items())
        ax.set_title(f"{name}({args}): max ratio {worst:.3f}" if args else f"{name}: max ratio {worst:.3f}", fontsize=9)
        ax.set_xlabel(r"$\|\nabla f\|$")
        ax.set_ylabel(r"$\|\nabla^2 f\|$")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        rows += [[name, float(a), float(b), float(c)] for a, b, c in zip(g, h, s["bound"])]
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle("(L0, L1) catalogue: local smoothness grows with the gradient; certificates hold", fontsize=11)
    fig.tight_layout()
    _write_outputs(fig, out, "local_smoothness", ["function", "grad_norm", "hess_norm", "certified_bound"], rows)


# -- heterogeneity (Theorem 2, Corollaries 3-4) ------------------------------------------------------
def _hetero_params(quick: bool) -> dict:
    # the heterogeneous ramp under Corollary 3's exact schedule (a theorem check: every T_emp/T_bound <= 1);
    # with d_x = 2, q = 1 the heterogeneity term binds for eps < 0.88 varsigma, the caps (eps^-2) above
    return {"family": "hetero", "family_params": {"dx": 2, "n": 2, "delta": 1.0},
            "varsigmas": [1.0, 0.0] if quick else [1.0, 0.5, 0.4, 0.0],
            "eps_grid": [0.5, 0.42, 0.36] if quick else [0.5, 0.42, 0.36, 0.3],
            "replicates": 2 if quick else 8, "seed": 0, "law": "sphere", "q": 1}


def _hetero_compute(p: dict) -> dict:
    out = {}
    for vs in p["varsigmas"]:
        m = epoch_complexity(p["family"], p["eps_grid"], {**p["family_params"], "varsigma": vs},
                             replicates=p["replicates"], seed=p["seed"], law=p["law"], schedule="corollary3",
                             q=p["q"])
        out[f"{vs:g}"] = {"varsigma": vs, "slope": m.measured, "bound_slope": m.bound, **m.details}
    return out


def _hetero_plot(res: dict, out: Path) -> None:
    data = res["data"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 4.2), gridspec_kw={"width_ratios": [1.5, 1]})
    rows, summary = [], {}
    for k, (key, d) in enumerate(data.items()):
        color = f"C{k}"
        eps = np.array([r["eps"] for r in d["rows"]])
        t = np.array([r["T_emp_mean"] for r in d["rows"]])
        tb = np.array([r["T_bound"] for r in d["rows"]], float)
        ci = d["slope_ci95"]
        ax.plot(1 / eps, t, "o-", color=color,
                label=rf"$\varsigma$={d['varsigma']:g}: slope {d['slope']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]")
        ax.plot(1 / eps, tb, ls="--", color=color, alpha=0.6)
        for r in d["rows"]:
            rows.append([d["varsigma"], r["eps"], r["T_emp_mean"], r["T_emp_min"], r["T_emp_max"], r["T_bound"],
                         r["ratio_max"], r["binding_term"], r["all_reached"]])
        summary[key] = {"varsigma": d["varsigma"], "slope": d["slope"], "slope_ci95": ci,
                        "bound_slope": d["bound_slope"], "largest_empirical_over_bound": d["ratio_max"],
                        "all_seeds_reached_eps": d["all_reached"], "eps_grid": eps.tolist(),
                        "binding_terms": [r["binding_term"] for r in d["rows"]], "replicates": d["replicates"]}
    ax.plot([], [], "k--", alpha=0.6, label=r"dashed: Corollary 3's $T_{bound}$ (same colour)")
    _epochs_vs_inverse_eps(ax, r"epochs to $\|\nabla F(z_t)\|\leq\varepsilon$ (mean of seeds)",
                           "Heterogeneous ramp under Corollary 3's schedule", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    vs = np.array([d["varsigma"] for d in data.values()])
    sl = np.array([d["slope"] for d in data.values()])
    lo = np.array([d["slope_ci95"][0] for d in data.values()])
    hi = np.array([d["slope_ci95"][1] for d in data.values()])
    bsl = np.array([d["bound_slope"] for d in data.values()])
    ax2.errorbar(vs, sl, yerr=[sl - lo, hi - sl], fmt="o-", color="C0", capsize=3, label="measured slope (95% CI)")
    ax2.plot(vs, bsl, "s--", color="C1", alpha=0.7, label=r"slope of $T_{bound}$ on the same grid")
    ax2.axhline(4, color="gray", lw=0.8, ls=":")
    ax2.axhline(2, color="gray", lw=0.8, ls=":")
    ax2.set_xlabel(r"heterogeneity $\varsigma$ ($\varsigma_x^2=\varsigma^2$, $\varsigma_y=0$)")
    ax2.set_ylabel(r"slope of $\log T$ vs $\log(1/\varepsilon)$")
    ax2.set_title(r"$\varepsilon^{-4}$ (heterogeneity) $\to$ $\varepsilon^{-2}$ (interpolation)", fontsize=10)
    ax2.set_ylim(1, 5)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    _write_outputs(fig, out, "heterogeneity", ["varsigma", "eps", "T_emp_mean", "T_emp_min", "T_emp_max", "T_bound",
                                               "ratio_max", "binding_term", "all_reached"], rows, summary)


# -- block-wise rates (Corollary 5) -------------------------------------------------------------------
def _blockwise_params(quick: bool) -> dict:
    return {"problems": {"hyb": {}, "lora": {}}, "epochs": 80 if quick else 400, "replicates": 2 if quick else 8,
            "mu": 1e-3, "seed": 0,
            "step": "separate: each block at its own Theorem 1 cap; common: both at min(cap_x, cap_y), the largest "
                    "common step the theorem covers"}


def _blockwise_compute(p: dict) -> dict:
    out = {}
    for name, kw in p["problems"].items():
        problem = make(name, **kw)
        c = problem.constants()
        cx, cy = bounds.step_caps(c, problem.n)
        delta = problem.initial_gap()
        runs = {}
        for label, ex, ey in (("separate", cx, cy), ("common", min(cx, cy), min(cx, cy))):
            tr = run(problem, RunConfig(method="hybrid", eta_x=ex, eta_y=ey, mu=p["mu"], epochs=p["epochs"],
                                        replicates=p["replicates"], seed=p["seed"]))
            T = np.arange(1, p["epochs"] + 1)
            erg_x = np.cumsum(tr.grad_sq_x[:-1].mean(1)) / T      # (1/T) sum_{t<T} E||grad_x F(z_t)||^2
            erg_y = np.cumsum(tr.grad_sq_y[:-1].mean(1)) / T
            W = np.array([bounds.theorem1_rhs(c, problem.n, problem.dx, ex, ey, p["mu"], int(t), delta) for t in T])
            runs[label] = {"eta_x": ex, "eta_y": ey, "erg_x": erg_x, "erg_y": erg_y,
                           "bound_x": W / ex, "bound_y": W / ey}
        out[name] = {"n": problem.n, "dx": problem.dx, "dy": problem.dy, "cap_x": cx, "cap_y": cy, "runs": runs}
    return out


def _blockwise_plot(res: dict, out: Path) -> None:
    data = res["data"]
    fig, axes = plt.subplots(1, len(data), figsize=(5.4 * len(data), 4.2), squeeze=False)
    rows, summary = [], {}
    for ax, (name, d) in zip(axes[0], data.items()):
        T = np.arange(1, len(d["runs"]["separate"]["erg_x"]) + 1)
        runs = {lab: {k: (np.asarray(v, float) if isinstance(v, list) else v) for k, v in r.items()}
                for lab, r in d["runs"].items()}
        sep, com = runs["separate"], runs["common"]
        for label, ls in (("separate", "-"), ("common", "--")):
            r = runs[label]
            for blk, color in (("x", "C0"), ("y", "C3")):
                ax.plot(T, r[f"erg_{blk}"], color=color, ls=ls, lw=1.6,
                        label=rf"{blk} block, {label} ($\eta_{blk}$={r[f'eta_{blk}']:.2g})")
            rows += [[name, label, int(t), float(a), float(b), float(bx), float(by)] for t, a, b, bx, by in
                     zip(T, r["erg_x"], r["erg_y"], r["bound_x"], r["bound_y"])]
        # Corollary 5: in the transient a block's ergodic average scales like 1/(T eta_b), so switching from the
        # common step to the block's own cap divides it by eta_b(separate)/eta_b(common)
        pred = {b: float(com[f"eta_{b}"] / sep[f"eta_{b}"]) for b in ("x", "y")}
        meas = {b: float(sep[f"erg_{b}"][-1] / com[f"erg_{b}"][-1]) for b in ("x", "y")}
        worst = float(max(np.max(sep["erg_x"] / sep["bound_x"]), np.max(sep["erg_y"] / sep["bound_y"])))
        summary[name] = {"cap_x": d["cap_x"], "cap_y": d["cap_y"], "epochs": int(T[-1]),
                         "separate_over_common_at_T": meas, "predicted_transient_ratio": pred,
                         "largest_measured_over_corollary5_bound": worst}
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("epochs T")
        ax.set_ylabel(r"$\frac{1}{T}\sum_{t<T}\|\nabla_b F(z_t)\|^2$ (mean of seeds)")
        ax.set_title(f"{name}: separate (own caps) vs common (min of caps)\n"
                     f"separate/common at T={T[-1]}: x {meas['x']:.2f} (pred. {pred['x']:.2f}), "
                     f"y {meas['y']:.2f} (pred. {pred['y']:.2f})\n"
                     f"bound $W/\\eta_b$ holds (measured <= {worst:.1e} of it)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Block-wise rates (Corollary 5): each block's ergodic gradient norm follows its own step size",
                 fontsize=10)
    fig.tight_layout()
    _write_outputs(fig, out, "blockwise", ["problem", "steps", "epoch", "ergodic_grad_x_sq", "ergodic_grad_y_sq",
                                           "bound_x", "bound_y"], rows, summary)


FIGURES = {
    f.name: f for f in [
        Figure("convergence", _convergence_compute, _convergence_plot, _convergence_params),
        Figure("epoch_complexity", _epoch_compute, _epoch_plot, _epoch_params),
        Figure("step_plane", _plane_compute, _plane_plot, _plane_params),
        Figure("variance_slope", _variance_compute, _variance_plot, _variance_params),
        Figure("local_smoothness", _local_compute, _local_plot, _local_params),
        Figure("heterogeneity", _hetero_compute, _hetero_plot, _hetero_params),
        Figure("blockwise", _blockwise_compute, _blockwise_plot, _blockwise_params),
    ]
}

__all__ = ["FIGURES"]
