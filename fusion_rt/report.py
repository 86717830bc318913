"""One self-contained HTML page for a replay: inline CSS, hand-written SVG charts, JPEG thumbnails as data URIs.

No plotting library (the runtime installs numpy and OpenCV only) and nothing fetched at view time,
so the page opens anywhere, offline. Sections: headline counts, latency histogram and per-stage
breakdown, a timeline of frame outcomes (degraded, rejected, dropped, deadline misses), attention
share per modality over time, metrics per condition, the worst frames, and what reading skipped.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence

import numpy as np

from fusion_rt.errors import ConfigError
from fusion_rt.replay import STAT_KEYS, ReplayResult

__all__ = ["render_report", "write_report"]

_STATUS_COLOURS = {"ok": "#3fa34d", "degraded": "#f0a202", "rejected": "#d7263d", "dropped": "#8d8d8d"}
# Where frames of several statuses share a pixel column of the timeline, the worst is drawn.
_STATUS_RANK = {"ok": 0, "degraded": 1, "dropped": 2, "rejected": 3}  # an unknown status: 4, in black
_MODALITY_COLOURS = {"camera": "#2e86de", "radar": "#e4572e", "map": "#76b041", "text": "#a05195"}
_TRIGGER_STAGES = ("camera_preprocess", "camera_encoder", "head", "overhead")
_STAGE_COLOURS = ("#2e86de", "#54a0ff", "#e4572e", "#999999")

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222;
background:#fafafa}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:13px}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px 14px;min-width:92px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#666}
table{border-collapse:collapse;font-size:13px;background:#fff}td,th{border:1px solid #e3e3e3;padding:3px 8px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.warn{background:#fff4e0;border-left:4px solid #f0a202;padding:6px 10px;margin:6px 0;font-size:13px}
.thumbs{display:flex;flex-wrap:wrap;gap:12px}.thumbs figure{margin:0;background:#fff;border:1px solid #e3e3e3;
padding:6px;border-radius:6px}.thumbs figcaption{font-size:12px;color:#444;max-width:320px}
svg{background:#fff;border:1px solid #e3e3e3;border-radius:6px}.legend span{display:inline-block;margin-right:12px;
font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{_e(n)}</span>'
                                            for n, c in items) + "</div>"


def _histogram(values: Sequence[float], width: int = 520, height: int = 220, bins: int = 30,
               marks: dict[str, float] | None = None) -> str:
    """An SVG histogram of `values` (ms) with vertical lines at `marks` (e.g. p50, p99)."""
    if not values:
        return "<p>no outputs</p>"
    a = np.asarray(values, dtype=np.float64)
    hi = float(np.percentile(a, 99.5)) * 1.1 or 1.0
    counts, edges = np.histogram(np.clip(a, 0, hi), bins=bins, range=(0.0, hi))
    left, bottom, top = 40, height - 28, 12
    plot_w, plot_h = width - left - 10, bottom - top
    peak = max(int(counts.max()), 1)
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    bar_w = plot_w / bins
    for i, c in enumerate(counts):
        h = plot_h * c / peak
        parts.append(f'<rect x="{left + i * bar_w:.1f}" y="{bottom - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="#2e86de"/>')
    for k in range(5):
        x = left + plot_w * k / 4
        parts.append(f'<text x="{x:.0f}" y="{height - 10}" text-anchor="middle">{hi * k / 4:.1f}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 0}" text-anchor="middle">end-to-end ms</text>')
    parts.append(f'<text x="4" y="{top + 8}">{peak}</text><text x="4" y="{bottom}">0</text>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#444"/>')
    for name, value in (marks or {}).items():
        if value is None:
            continue
        x = left + plot_w * min(value / hi, 1.0)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#d7263d" '
                     f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{top + 10}" fill="#d7263d">{_e(name)} '
                     f'{value:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _stage_bars(latency: dict, width: int = 520, height: int = 150) -> str:
    """Stacked horizontal bars of the trigger path's stages at p50 and p99."""
    stages = [s for s in _TRIGGER_STAGES if s in latency]
    if not stages:
        return ""
    rows = [("p50", [latency[s].get("p50") or 0.0 for s in stages]),
            ("p99", [latency[s].get("p99") or 0.0 for s in stages])]
    total = max(sum(v) for _, v in rows) or 1.0
    left, plot_w = 44, width - 110
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    for r, (name, values) in enumerate(rows):
        y = 16 + r * 46
        x = left
        parts.append(f'<text x="6" y="{y + 20}">{name}</text>')
        for s, v, colour in zip(stages, values, _STAGE_COLOURS, strict=False):
            w = plot_w * v / total
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="30" fill="{colour}">'
                         f'<title>{_e(s)} {v:.3f} ms</title></rect>')
            x += w
        parts.append(f'<text x="{x + 4:.1f}" y="{y + 20}">{sum(values):.2f} ms</text>')
    parts.append("</svg>")
    return "".join(parts) + _legend(list(zip(stages, _STAGE_COLOURS, strict=False)))


def _columns(x0: np.ndarray, x1: np.ndarray, rank: np.ndarray, n: int) -> np.ndarray:
    """Per pixel column 0..n-1, the highest `rank` whose spans [x0, x1) (pixels) cover at least half of
    it (as drawn, a span covering less of a column shows little of it); -1: none. A span of a pixel
    or more covers half of some column, so no frame is lost."""
    state = np.full(n, -1, dtype=np.int64)
    values = sorted(set(rank.tolist()) - {-1})
    if not values:
        return state
    cover = np.zeros((values[-1] + 1, n))
    first = np.floor(x0).astype(np.int64)
    for k in range(int(np.ceil(x1 - first).max())):
        col = first + k
        overlap = np.minimum(x1, col + 1) - np.maximum(x0, col)
        inside = (overlap > 0) & (rank >= 0) & (col >= 0) & (col < n)
        np.add.at(cover, (rank[inside], col[inside]), overlap[inside])
    for value in values:  # the worst last
        state[cover[value] >= 0.5 - 1e-9] = value
    return state


def _runs(state: np.ndarray) -> list[tuple[int, int, int]]:
    """(first column, columns, value) of each run of equal values >= 0 in `state`."""
    edges = np.flatnonzero(np.diff(state)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(state)]))
    return [(int(a), int(b - a), int(state[a])) for a, b in zip(starts, ends, strict=True) if state[a] >= 0]


def _decimated(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points of a line to draw: of consecutive points in one pixel column, the lowest
    and the highest (in their order), which span the column as all of them do."""
    keep: list[int] = []
    i, n = 0, len(xs)
    while i < n:
        column = int(xs[i])
        j = i + 1
        while j < n and int(xs[j]) == column:
            j += 1
        if j - i <= 2:
            keep.extend(range(i, j))
        else:
            group = ys[i:j]
            lo = min(range(j - i), key=group.__getitem__)
            hi = max(range(j - i), key=group.__getitem__)
            keep.extend(sorted({i + lo, i + hi}))
        i = j
    return keep


def _timeline(result: ReplayResult, width: int = 1040) -> str:
    """Frame outcomes over log time: status lane, one lane per masked modality, deadline misses, latency.

    Drawn per pixel column, so the page's size does not grow with the drive: each lane is one rect
    per run of columns in one state (a column takes the worst status of its frames), and the latency
    line keeps, of the frames in one column, the lowest and the highest.
    """
    frames = result.frames
    if not frames:
        return "<p>no frames</p>"
    t0 = frames[0].stamp_ns
    span = max((frames[-1].stamp_ns - t0) / 1e9, 1e-3)
    others = [m for m in result.modalities if m != "camera"]
    lanes = ["status", *[f"{m} missing" for m in others], "deadline miss"]
    lane_h, left, top = 18, 110, 8
    lat_h = 90
    height = top + lane_h * len(lanes) + lat_h + 40
    plot_w = width - left - 12

    def x_of(stamp: int) -> float:
        return left + plot_w * ((stamp - t0) / 1e9) / span

    tick_w = max(plot_w / max(len(frames), 1), 1.0)
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    for i, lane in enumerate(lanes):
        y = top + i * lane_h
        parts.append(f'<text x="4" y="{y + 12}">{_e(lane)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 2}" width="{plot_w}" height="{lane_h - 4}" fill="#f4f4f4"/>')
    # each frame spans [x, x + tick_w) as a tick; a lane is painted column by column (the last frame's
    # tick reaches past the plot's right edge, as it always did)
    xs = np.array([x_of(f.stamp_ns) - left for f in frames], dtype=np.float64)
    n_cols = int(np.ceil(plot_w + max(tick_w, 2.0))) + 1
    status_colours = [*(_STATUS_COLOURS[k] for k in sorted(_STATUS_RANK, key=_STATUS_RANK.get)), "#000"]
    ranks = np.array([_STATUS_RANK.get(f.status, 4) for f in frames], dtype=np.int64)
    lane_states = [(_columns(xs, xs + tick_w, ranks, n_cols), status_colours)]
    for m in others:
        flagged = np.array([0 if f"degraded:{m}_missing" in f.flags else -1 for f in frames], dtype=np.int64)
        lane_states.append((_columns(xs, xs + tick_w, flagged, n_cols), ["#f0a202"]))
    missed = np.array([0 if any(fl.startswith("deadline_miss:") for fl in f.flags) else -1 for f in frames],
                      dtype=np.int64)
    lane_states.append((_columns(xs, xs + max(tick_w, 2.0), missed, n_cols), ["#d7263d"]))
    for i, (state, colours) in enumerate(lane_states):
        for col, run, value in _runs(state):
            parts.append(f'<rect x="{left + col}" y="{top + i * lane_h + 2}" width="{run}" height="{lane_h - 4}" '
                         f'fill="{colours[value]}"/>')
    y0 = top + lane_h * len(lanes) + 6
    lat = [(f.stamp_ns, f.timings_ms.get("end_to_end")) for f in frames if f.timings_ms.get("end_to_end") is not None]
    if lat:
        peak = max(v for _, v in lat) or 1.0
        lat_x = [x_of(s) for s, _ in lat]
        lat_y = [y0 + lat_h - lat_h * v / peak for _, v in lat]
        pts = " ".join(f"{lat_x[i]:.1f},{lat_y[i]:.1f}" for i in _decimated(lat_x, lat_y))
        parts.append(f'<text x="4" y="{y0 + 12}">latency ms</text><text x="4" y="{y0 + 26}">max {peak:.1f}</text>')
        parts.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{lat_h}" fill="#f9f9f9"/>')
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#2e86de" stroke-width="1"/>')
    for k in range(6):
        x = left + plot_w * k / 5
        parts.append(f'<text x="{x:.0f}" y="{height - 6}" text-anchor="middle">{span * k / 5:.1f} s</text>')
    parts.append("</svg>")
    return "".join(parts) + _legend([*_STATUS_COLOURS.items(), ("deadline miss", "#d7263d")])


def _share_chart(result: ReplayResult, width: int = 1040, height: int = 200) -> str:
    """Stacked area of the attention share per modality over log time (each boundary drawn through at
    most two points per pixel column: `_decimated`)."""
    frames = [f for f in result.frames if f.share]
    if not frames or not any(any(f.share) for f in frames):
        return "<p>the package's head reports no attention share</p>"
    t0 = frames[0].stamp_ns
    span = max((frames[-1].stamp_ns - t0) / 1e9, 1e-3)
    left, top, plot_h = 40, 8, height - 36
    plot_w = width - left - 12
    shares = np.array([f.share for f in frames], dtype=np.float64)  # [N, M]
    sums = shares.sum(axis=1, keepdims=True)
    shares = np.divide(shares, sums, out=np.zeros_like(shares), where=sums > 0)
    xs = [left + plot_w * ((f.stamp_ns - t0) / 1e9) / span for f in frames]

    def boundary(values: np.ndarray) -> list[str]:  # one stacked boundary, left to right
        ys = (top + plot_h * (1 - values)).tolist()
        return [f"{xs[i]:.1f},{ys[i]:.1f}" for i in _decimated(xs, ys)]

    base = np.zeros(len(frames))
    lower = boundary(base)
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    for m, name in enumerate(result.modalities):
        upper = base + shares[:, m]
        top_pts = boundary(upper)
        parts.append(f'<polygon points="{" ".join(top_pts + lower[::-1])}" '
                     f'fill="{_MODALITY_COLOURS.get(name, "#777")}" fill-opacity="0.85"/>')
        base, lower = upper, top_pts
    parts.append(f'<text x="4" y="{top + 10}">1.0</text><text x="4" y="{top + plot_h}">0</text>')
    for k in range(6):
        x = left + plot_w * k / 5
        parts.append(f'<text x="{x:.0f}" y="{height - 8}" text-anchor="middle">{span * k / 5:.1f} s</text>')
    parts.append("</svg>")
    return "".join(parts) + _legend([(m, _MODALITY_COLOURS.get(m, "#777")) for m in result.modalities])


def _metrics_section(metrics: dict | None) -> str:
    if not metrics:
        return "<p>The log has no ground truth: no task metrics.</p>"
    rows = [("overall", metrics["overall"]), *metrics["per_condition"].items()]
    labels = list(metrics["overall"]["scene_auc"])
    head = "".join(f"<th>AUC {_e(lb)}</th>" for lb in labels)
    out = ["<table><tr><th>condition</th><th>frames</th><th>scene AUC</th><th>scene F1</th><th>BEV IoU</th>"
           f"{head}</tr>"]
    for name, m in rows:
        cells = "".join(f"<td>{_num(m['scene_auc'].get(lb))}</td>" for lb in labels)
        out.append(f"<tr><td>{_e(name)}</td><td>{m['frames']}</td><td>{_num(m['mean_scene_auc'])}</td>"
                   f"<td>{_num(m['mean_scene_f1'])}</td><td>{_num(m.get('mean_bev_iou'))}</td>{cells}</tr>")
    out.append("</table>")
    # bars of mean scene AUC per condition
    conds = list(metrics["per_condition"].items())
    width, bar_h = 520, 22
    height = 12 + bar_h * len(conds) + 10
    svg = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    for i, (name, m) in enumerate(conds):
        y = 8 + i * bar_h
        v = m["mean_scene_auc"]
        if v is None:  # no label with both classes in this condition: no bar, not a zero
            svg.append(f'<text x="4" y="{y + 14}">{_e(name)}</text><text x="104" y="{y + 14}" fill="#888">n/a (no '
                       'label with both classes)</text>')
            continue
        svg.append(f'<text x="4" y="{y + 14}">{_e(name)}</text><rect x="100" y="{y}" width="{360 * v:.1f}" '
                   f'height="{bar_h - 6}" fill="#2e86de"/><text x="{104 + 360 * v:.1f}" y="{y + 14}">{v:.3f}</text>')
    svg.append("</svg>")
    return "".join(out) + "<p class='sub'>mean scene AUC per condition</p>" + "".join(svg)


def render_report(result: ReplayResult) -> str:
    """The report page as an HTML string (see the module docstring)."""
    s = result.summary
    pkg, log = s["package"], s["log"]
    e2e = s["latency_ms"].get("end_to_end", {})
    cards = [("frames", s["frames"]), ("outputs", s["outputs"]), ("degraded", s["degraded"]),
             ("rejected", s["rejected"]), ("dropped", s["dropped"]), ("deadline misses", s["deadline_misses"]),
             ("e2e p50 ms", _num(e2e.get("p50"), 2)), ("e2e p99 ms", _num(e2e.get("p99"), 2)),
             ("x real time", _num(s.get("realtime_factor"), 1))]
    overall = (s.get("metrics") or {}).get("overall")
    if overall:
        cards += [("scene AUC", _num(overall["mean_scene_auc"])), ("BEV IoU", _num(overall.get("mean_bev_iou")))]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>fusion-rt replay: {_e(pkg['name'])}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Replay of {_e(os.path.basename(log['path']))} through {_e(pkg['name'])}</h1>",
             f"<div class='sub'>{_e(log['path'])} · package {_e(pkg['path'])} ({_e(pkg['precision'])}, sha256 "
             f"{_e(pkg['sha256'][:12])}…) · backend {_e(pkg['backend'])} · mode {_e(s['mode'])} · "
             f"{_num(log['duration_s'], 1)} s of log in {_num(s['wall_s'], 1)} s"
             + (f" · masked: {_e(', '.join(s['drop']))}" if s["drop"] else "") + "</div>"]
    for w in s.get("warnings", []):
        parts.append(f"<div class='warn'>{_e(w)}</div>")
    parts.append("<div class='cards'>" + "".join(f"<div class='card'><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                                 for k, v in cards) + "</div>")
    e2e_values = [f.timings_ms["end_to_end"] for f in result.frames if "end_to_end" in f.timings_ms]
    parts.append("<h2>Latency</h2><div style='display:flex;gap:16px;flex-wrap:wrap'><div>"
                 + _histogram(e2e_values, marks={"p50": e2e.get("p50"), "p99": e2e.get("p99")})
                 + "</div><div>" + _stage_bars(s["latency_ms"]) + "</div></div>")
    rows = "".join(f"<tr><td>{_e(stage)}</td><td>{v.get('count', '')}</td>"
                   + "".join(f"<td>{_num(v.get(k))}</td>" for k in STAT_KEYS) + "</tr>"
                   for stage, v in s["latency_ms"].items())
    parts.append("<table><tr><th>stage (ms)</th><th>count</th>" + "".join(f"<th>{k}</th>" for k in STAT_KEYS)
                 + f"</tr>{rows}</table>")
    parts.append("<h2>Timeline</h2>" + _timeline(result))
    parts.append("<h2>Attention share per modality</h2>" + _share_chart(result))
    parts.append("<h2>Metrics per condition</h2>" + _metrics_section(s.get("metrics")))
    if result.worst:
        figs = []
        for w in result.worst:
            data = base64.b64encode(w.thumbnail_jpeg).decode("ascii")
            figs.append(f"<figure><img src='data:image/jpeg;base64,{data}' width='320' alt='frame {w.stamp_ns}'>"
                        f"<figcaption>stamp {w.stamp_ns} · {_e(w.reason)} {w.score:.3f}"
                        + (" ms" if w.reason == "latency" else "")
                        + (f" · {_e(w.condition)}" if w.condition else "") + "</figcaption></figure>")
        parts.append("<h2>Worst frames</h2><div class='thumbs'>" + "".join(figs) + "</div>")
    reasons = s.get("reasons", {})
    lines = [f"<tr><td>{_e(outcome)}</td><td>{_e(k)}</td><td>{n}</td></tr>"
             for outcome, bucket in reasons.items() for k, n in sorted(bucket.items())]
    if lines:
        parts.append("<h2>Reasons</h2><table><tr><th>outcome</th><th>reason</th><th>count</th></tr>"
                     + "".join(lines) + "</table>")
    if log["issue_list"]:
        parts.append("<h2>Log issues</h2><table><tr><th>offset</th><th>kind</th><th>detail</th></tr>"
                     + "".join(f"<tr><td>{i['offset']}</td><td>{_e(i['kind'])}</td>"
                               f"<td style='text-align:left'>{_e(i['detail'])}</td></tr>" for i in log["issue_list"])
                     + "</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(result: ReplayResult, path: str | os.PathLike) -> None:
    """Write `render_report(result)` to `path`."""
    if not result.frames and result.summary.get("frames"):
        raise ConfigError("the replay kept no per-frame records (keep_frames=False); the report needs them")
    from fusion_rt.outputs import write_text

    write_text(path, render_report(result))
