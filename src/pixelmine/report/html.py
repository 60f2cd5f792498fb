"""HTML building blocks for the report. Every piece of user text goes through :func:`esc`."""

from __future__ import annotations

import html

CSS = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#e3e6ec; --bg:#f6f7f9; --card:#fff; --accent:#0b5fff;
        --bad:#c62828; --warn:#d97706; --ok:#1b7f3b; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#111827; color:#fff; padding:28px 40px 20px; }
header h1 { margin:0 0 4px; font-size:26px; letter-spacing:.2px; }
header p { margin:0; color:#c7cdd9; }
nav { position:sticky; top:0; z-index:5; background:#fff; border-bottom:1px solid var(--line);
      padding:8px 40px; display:flex; flex-wrap:wrap; gap:4px 18px; }
nav a { color:var(--muted); text-decoration:none; font-size:13px; }
nav a:hover { color:var(--accent); }
main { max-width:1280px; margin:0 auto; padding:12px 40px 60px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px 24px;
          margin:22px 0; }
h2 { margin:0 0 6px; font-size:20px; }
h3 { margin:18px 0 6px; font-size:16px; }
p.lead { color:var(--muted); margin:0 0 14px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(160px, 1fr)); gap:12px; margin:10px 0 16px; }
.card { border:1px solid var(--line); border-radius:8px; padding:12px 14px; background:#fbfcfd; }
.card .n { font-size:26px; font-weight:650; }
.card .t { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
.card.bad .n { color:var(--bad); } .card.warn .n { color:var(--warn); } .card.good .n { color:var(--ok); }
.cols { display:grid; grid-template-columns:repeat(auto-fit, minmax(300px, 1fr)); gap:18px; }
table { border-collapse:collapse; width:100%; margin:6px 0 10px; font-size:13px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.3px; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.bar { background:#e8eefc; border-radius:3px; height:10px; min-width:2px; display:inline-block; vertical-align:middle; }
.bar.b { background:#7aa7ff; }
.grid { display:flex; flex-wrap:wrap; gap:10px; }
figure { margin:0; width:128px; border:1px solid var(--line); border-radius:6px; padding:6px; background:#fff; }
figure img, figure .noimg { width:114px; height:114px; object-fit:contain; background:#f1f3f6; border-radius:3px;
                            display:block; }
figure .noimg { display:flex; align-items:center; justify-content:center; color:var(--muted); font-size:11px; }
figcaption { font-size:11px; color:var(--muted); margin-top:4px; word-break:break-word; line-height:1.35; }
figcaption b { color:var(--ink); }
.score { display:inline-block; padding:0 5px; border-radius:3px; font-weight:600; color:#fff; font-size:10.5px; }
.s0 { background:var(--bad); } .s1 { background:var(--warn); } .s2 { background:#8a94a6; }
.group { border:1px dashed var(--line); border-radius:8px; padding:10px; margin:10px 0; }
.group .head { font-size:12px; color:var(--muted); margin-bottom:6px; }
figure.keeper { border:2px solid var(--ok); }
.tag { display:inline-block; background:#eef2f7; border-radius:10px; padding:0 8px; margin:1px 2px; font-size:12px; }
.tag.flag { background:#fdecea; color:var(--bad); }
.missing { background:#fff8e6; border:1px solid #f3d58a; border-radius:8px; padding:10px 14px; color:#6b5200; }
.missing code { background:#fff1c7; }
code { background:#f1f3f6; padding:1px 5px; border-radius:4px; font-size:12.5px; }
img.plot { max-width:100%; height:auto; }
.what { background:#eef6ff; border-left:3px solid var(--accent); padding:8px 12px; margin:8px 0 12px; border-radius:4px; }
.cm td { text-align:center; font-variant-numeric:tabular-nums; min-width:44px; }
.cm th { text-transform:none; font-size:12.5px; color:var(--ink); }
footer { color:var(--muted); text-align:center; font-size:12px; padding:20px; }
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def table(headers: list[str], rows: list[list], numeric: set[int] = frozenset(), raw: set[int] = frozenset()) -> str:
    """A table; cells are escaped unless their column is in ``raw`` (pre-built HTML)."""
    head = "".join(f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = cell if i in raw else esc(_fmt(cell))
            cells.append(f'<td class="num">{text}</td>' if i in numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def bar(value: float, largest: float, width: int = 160) -> str:
    share = 0.0 if largest <= 0 else value / largest
    return f'<span class="bar b" style="width:{max(2, int(width * share))}px"></span>'


def count_table(counts: dict, title: str) -> str:
    if not counts:
        return ""
    largest = max(counts.values())
    total = sum(counts.values())
    rows = [[name, n, f"{100 * n / total:.1f} %", bar(n, largest)] for name, n in counts.items()]
    return f"<div><h3>{esc(title)}</h3>" + table(["", "count", "share", ""], rows, numeric={1, 2}, raw={3}) + "</div>"


def cards(items: list[tuple[str, object, str]]) -> str:
    """Big-number cards: (title, value, css class among '', 'bad', 'warn', 'good')."""
    return '<div class="cards">' + "".join(
        f'<div class="card {esc(cls)}"><div class="n">{esc(_fmt(value))}</div><div class="t">{esc(title)}</div></div>'
        for title, value, cls in items) + "</div>"


def score_badge(score: float) -> str:
    level = 0 if score < 0.2 else 1 if score < 0.5 else 2
    return f'<span class="score s{level}">{score:.2f}</span>'


def figure(uri: str | None, caption_html: str, *, css: str = "", title: str = "") -> str:
    image = (f'<img src="{uri}" alt="{esc(title)}" loading="lazy">' if uri else '<div class="noimg">no preview</div>')
    return f'<figure class="{esc(css)}" title="{esc(title)}">{image}<figcaption>{caption_html}</figcaption></figure>'


def missing(what: str, command: str) -> str:
    return f'<p class="missing">{esc(what)} Run <code>{esc(command)}</code> to produce it.</p>'


def section(anchor: str, title: str, lead: str, body: str) -> str:
    lead_html = f'<p class="lead">{esc(lead)}</p>' if lead else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead_html}{body}</section>'


def page(title: str, subtitle: str, nav: list[tuple[str, str]], sections: list[str], footer: str) -> str:
    links = "".join(f'<a href="#{esc(anchor)}">{esc(name)}</a>' for anchor, name in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{links}</nav>"
            f"<main>{''.join(sections)}</main><footer>{esc(footer)}</footer></body></html>\n")
