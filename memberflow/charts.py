"""Charts as PNG files, with Chinese text that renders.

Matplotlib's own fonts have no CJK glyphs: a level named 金卡 would be drawn as boxes. The
charts use the first CJK font found, by family name among those matplotlib knows, else by the
file Debian's `fonts-noto-cjk` installs (which `.ci/run` installs, and the README asks for).
Without any, charts still render, Chinese as boxes, and `cjk_font()` says so once in the log.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC",
            "WenQuanYi Zen Hei", "Microsoft YaHei", "PingFang SC", "SimHei")
FILES = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
         "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
         "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")


@functools.cache
def cjk_font() -> str | None:
    """The family name of a CJK font matplotlib can use, or None."""
    from matplotlib import font_manager

    known = {f.name for f in font_manager.fontManager.ttflist}
    for family in FAMILIES:
        if family in known:
            return family
    for file in FILES:
        if Path(file).exists():
            font_manager.fontManager.addfont(file)
            return str(font_manager.FontProperties(fname=file).get_name())
    log.warning("no CJK font found (Debian: apt install fonts-noto-cjk): Chinese text in "
                "charts will show as boxes")
    return None


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only, with a CJK font first in line."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    from matplotlib import pyplot as plt

    family = cjk_font()
    if family is not None:
        plt.rcParams["font.sans-serif"] = [family, "DejaVu Sans"]
        plt.rcParams["font.family"] = "sans-serif"
    plt.rcParams["axes.unicode_minus"] = False   # CJK fonts often lack U+2212
    return plt


def thousands(axis: Any) -> None:
    """Tick labels of a count or money axis with thousands separators (1,250,000)."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
