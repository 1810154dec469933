"""The style sheet of the CA's pages (inline in each page, so a page needs no other request).

Colours are chosen for contrast (WCAG AA, at least 4.5:1 for text): body text #1b1f24 and
muted text #4f5862 on white, white on the header's #1d3557, the primary button white on
#0b5cad (6.5:1), the secondary button #a4161a on white (7.4:1) with an outline only, so the
safe choice is the one that stands out. Below 30rem the choices stack and fill the width
(44 px tall at least, a finger's target); long codes and addresses wrap; a PEM scrolls
inside its own box, never the page.
"""
from __future__ import annotations

STYLE = (
    ":root{color-scheme:light}*{box-sizing:border-box}"
    "body{margin:0;background:#f3f4f6;color:#1b1f24;"
    "font:1rem/1.55 system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans',sans-serif}"
    "header.site,footer{background:#1d3557;color:#fff;padding:.75rem 1rem}"
    "header.site a{color:#fff;font-weight:600;text-decoration:none}"
    "footer{font-size:.9rem;text-align:center}footer a{color:#fff}"
    "main{max-width:42rem;margin:2rem auto;padding:1.5rem 2rem;background:#fff;"
    "border:1px solid #d0d7de;border-radius:8px}"
    "h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem}"
    "h2{font-size:1.2rem;margin:1.5rem 0 .5rem}"
    "a{color:#0b5cad}.status{color:#4f5862;font-size:.95rem}"
    ".wrap,code{overflow-wrap:anywhere}"
    "code,pre{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace}"
    "pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:1rem;"
    "overflow-x:auto;max-width:100%;font-size:.8rem}"
    ".choices{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.5rem}"
    ".choices form{margin:0}"
    "button{font:inherit;min-height:44px;padding:.6rem 1.25rem;border-radius:6px;"
    "cursor:pointer}"
    "button.primary{background:#0b5cad;color:#fff;border:2px solid #0b5cad;font-weight:600;"
    "font-size:1.05rem}button.primary:hover{background:#094a8c}"
    "button.secondary{background:#fff;color:#a4161a;border:1px solid #a4161a;"
    "font-size:.95rem}button.secondary:hover{background:#fff5f5}"
    "button:focus-visible{outline:3px solid #e76f00;outline-offset:2px}"
    "dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.35rem 1rem}"
    "dt{font-weight:600}dd{margin:0;min-width:0}ul.names{margin:0;padding-left:1.1rem}"
    ".notice{border-left:4px solid #a4161a;background:#fff5f5;padding:.5rem 1rem}"
    "@media (max-width:42rem){main{margin:0;border:0;border-radius:0;padding:1rem}}"
    "@media (max-width:30rem){.choices{flex-direction:column}.choices button{width:100%}"
    "dl{grid-template-columns:minmax(0,1fr)}dd{margin-bottom:.5rem}}"
)
