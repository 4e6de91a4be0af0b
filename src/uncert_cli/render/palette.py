"""Colours every figure shares: the Okabe–Ito palette, distinguishable with the common colour-vision
deficiencies and in greyscale print (Okabe & Ito 2008, "Color Universal Design").
"""

from __future__ import annotations

from uncert_cli.posterior.predictives import PREDICTIVES

BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
GREEN = "#009E73"
YELLOW = "#F0E442"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
GREY = "#555555"

#: The colours by the names a predictive declares (``Predictive.colour``).
NAMED = {"black": BLACK, "orange": ORANGE, "sky blue": SKY_BLUE, "green": GREEN, "yellow": YELLOW, "blue": BLUE,
         "vermillion": VERMILLION, "purple": PURPLE, "grey": GREY}
#: One colour per predictive, used by every plot and the HTML report alike; each predictive names its own.
PREDICTIVE_COLORS = {str(kind): NAMED[p.colour] for kind, p in PREDICTIVES.items()}
#: The line style of each predictive's curves.
PREDICTIVE_STYLES = {str(kind): p.line_style for kind, p in PREDICTIVES.items()}
#: Colours for a sequence of series (data sets, criteria) after the first.
SERIES = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY_BLUE, YELLOW, BLACK)


def use_in_matplotlib() -> None:
    """Make :data:`SERIES` matplotlib's default colour cycle (lines drawn without a colour)."""
    import matplotlib
    from cycler import cycler

    matplotlib.rcParams["axes.prop_cycle"] = cycler(color=list(SERIES))


# Every figure module imports this one, so its lines without an explicit colour get the palette too.
use_in_matplotlib()
