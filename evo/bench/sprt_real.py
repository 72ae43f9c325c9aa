"""SPRT: the simulation's savings and error rates (evo.bench.sprt_sim), and the same questions asked of
real searches of the noisy toy target, where the truth is known from its formula.

Real-search figures, per strategy (all with evo's default [sprt] settings, on the `noisy` target):
* pruned share: candidate screening runs stopped by the futility test / candidate screening runs;
  wrong prunes: pruned candidates that were truly better than the parent they were compared with.
* seconds saved: for each pruned run, the median seconds of a complete candidate run of the same
  search minus its own seconds; saved share = saved / (all run seconds + saved).
* promotions, and how many were true improvements (noise-free objective of the promoted
  configuration lower than the one it replaced); `greedy-nosprt` (single-run promotion) beside it.
* runs by role: what the replicates and confirmation runs cost beside the screening runs.
"""

from __future__ import annotations

import io
import statistics
import sys
from pathlib import Path
from typing import Any

from evo.bench.common import fmt


def simulation(quick: bool, seed: int, log: Any = print) -> dict[str, Any]:
    try:
        from evo.bench import sprt_sim
    except ImportError as e:
        return {"status": "missing", "reason": f"evo.bench.sprt_sim not importable: {e}"}
    buf = io.StringIO()
    real_stdout = sys.stdout
    try:
        sys.stdout = _Tee(real_stdout, buf)
        result = sprt_sim.run(quick=quick, seed=seed)
        formatter = getattr(sprt_sim, "format_table", None)
        if formatter is not None:
            for line in formatter(result).splitlines():
                log(f"  {line}")
    except Exception as e:  # noqa: BLE001 - another module's failure is reported, not fatal
        return {"status": "error", "reason": f"{type(e).__name__}: {e}"[:500]}
    finally:
        sys.stdout = real_stdout
    return {"status": "ok", "result": result, "printed": buf.getvalue()[-20000:]}


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def real(quality_res: dict[str, Any]) -> dict[str, Any]:
    recs = [r for r in quality_res.get("searches", []) if r["target"] == "noisy" and r["strategy"] != "tpe"]
    out: dict[str, Any] = {}
    for strat in dict.fromkeys(r["strategy"] for r in recs):
        rs = [r for r in recs if r["strategy"] == strat]
        st = [r["sprt_stats"] for r in rs]
        cand = sum(s["candidate_runs"] for s in st)
        promos = sum(s["promotions"] for s in st)
        roles: dict[str, int] = {}
        decisions: dict[str, int] = {}
        for s in st:
            for k, v in s["runs_by_role"].items():
                roles[k] = roles.get(k, 0) + v
            for k, v in s["decisions"].items():
                decisions[k] = decisions.get(k, 0) + v
        saved = sum(s["seconds_saved"] for s in st)
        spent = sum(s["seconds_spent"] for s in st)
        out[strat] = {
            "searches": len(rs), "sprt": rs[0]["sprt"], "candidate_runs": cand,
            "pruned": sum(s["pruned"] for s in st), "pruned_share": sum(s["pruned"] for s in st) / max(1, cand),
            "wrong_prunes": sum(s["wrong_prunes"] for s in st),
            "seconds_saved": round(saved, 2), "seconds_spent": round(spent, 2), "saved_share": saved / (spent + saved) if spent + saved else 0.0,
            "promotions": promos, "true_promotions": sum(s["true_promotions"] for s in st),
            "true_promotion_share": sum(s["true_promotions"] for s in st) / promos if promos else None,
            "runs_by_role": roles, "runs_per_screening_run": sum(roles.values()) / max(1, roles.get("candidate", 0) + roles.get("baseline", 0)),
            "decisions": decisions, "sigma_final_median": statistics.median([s["sigma_final"] for s in st if s.get("sigma_final") is not None] or [float("nan")]),
            "regret_confirmed_median": statistics.median(r["regret_confirmed"] for r in rs),
        }
    return out


def run(quick: bool, out: Path, seed: int = 0, quality_res: dict[str, Any] | None = None, sizes: dict[str, Any] | None = None,
        log: Any = print, source: str = "") -> dict[str, Any]:
    res: dict[str, Any] = {"simulation": simulation(quick, seed, log)}
    if quality_res is None or not any(r["target"] == "noisy" for r in quality_res.get("searches", [])):
        from evo.bench import quality

        size: dict[str, Any] = {"targets": ["noisy"], "strategies": ["greedy", "population", "random"], "extra": {"noisy": ["greedy-nosprt"]}}
        if quick:
            size |= {"seeds": 2, "strategies": ["greedy"]}
        quality_res = quality.run(quick, out, seed, sizes=size | (sizes or {}), log=log)
        res["searches_from"] = "own searches of the noisy target"
    else:
        res["searches_from"] = source or "the quality part's searches of the noisy target"
    res["real"] = real(quality_res)
    for strat, r in res["real"].items():
        log(f"  noisy {strat:14} pruned {r['pruned_share']:.0%} (wrong {r['wrong_prunes']}), saved {r['saved_share']:.0%} of run seconds, "
            f"promotions {r['promotions']} ({r['true_promotions']} true), {r['runs_per_screening_run']:.2f} runs per screening run")
    return res


def table(res: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    sim = res.get("simulation", {})
    if sim.get("status") != "ok":
        rows.append(("SPRT simulation", f"{sim.get('status')}: {sim.get('reason', '')}"[:120]))
    else:
        rows += sim_rows(sim["result"])
    for strat, r in res.get("real", {}).items():
        tp = r["true_promotion_share"]
        rows.append((f"SPRT on real searches (noisy), {strat}{'' if r['sprt'] else ' (SPRT off)'}",
                     f"pruned {r['pruned_share']:.0%} (wrong {r['wrong_prunes']}), saved {r['saved_share']:.0%} of run s, "
                     f"promotions {r['promotions']} ({'-' if tp is None else f'{tp:.0%}'} true), {r['runs_per_screening_run']:.2f} runs/screening run"))
    return rows


def sim_rows(r: Any) -> list[tuple[str, str]]:
    """Headline numbers of evo.bench.sprt_sim.run's dict (its keys as of writing; others are skipped)."""
    rows: list[tuple[str, str]] = []
    if not isinstance(r, dict):
        return rows
    pct = lambda x: "-" if not isinstance(x, (int, float)) else f"{100 * x:.0f}%"  # noqa: E731
    for pol, s in (r.get("single") or {}).items():
        if isinstance(s, dict):
            rows.append((f"SPRT sim, single candidates, {pol}",
                         f"runs/candidate {fmt(s.get('runs_per_candidate'))}, compute saved {pct(s.get('compute_saved'))}, "
                         f"no-gain promoted {pct(s.get('nogain_promoted'))}, better lost {pct(s.get('better_lost'))}, worse pruned {pct(s.get('worse_pruned'))}"))
    sig = (r.get("config") or {}).get("sigma")
    unit, div = ("sigma", sig) if isinstance(sig, (int, float)) and sig > 0 else ("", 1.0)
    per = lambda x: x / div if isinstance(x, (int, float)) else None  # noqa: E731
    for pol, s in (r.get("ratchet") or {}).items():
        if isinstance(s, dict):
            rows.append((f"SPRT sim, ratchet at equal compute, {pol}",
                         f"true gain {fmt(per(s.get('true_gain')))} {unit} (se {fmt(per(s.get('true_gain_se')))}), reported {fmt(per(s.get('reported_gain')))}, "
                         f"promotions {fmt(s.get('promotions'))} ({fmt(s.get('nogain_promotions'))} no-gain, {fmt(s.get('harmful_promotions'))} harmful)"))
    if not rows:
        flat = _scalars(r)
        if flat:
            rows.append(("SPRT simulation (numbers)", ", ".join(f"{k} {fmt(v)}" for k, v in flat[:8])))
    return rows


def _scalars(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append((f"{prefix}{k}", v))
            elif isinstance(v, dict) and len(out) < 8:
                out += _scalars(v, f"{prefix}{k}.")
    return out
