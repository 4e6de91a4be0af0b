"""Colours every figure shares: the Okabe–Ito palette, distinguishable with the common colour-vision
deficiencies and in greyscale print (Okabe & Ito 2008, "Color Universal Design")."""

from __future__ import annotations

BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
GREEN = "#009E73"
YELLOW = "#F0E442"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
GREY = "#555555"

#: One colour per predictive, used by every plot and the HTML report alike.
PREDICTIVE_COLORS = {"map": GREY, "mc": BLUE, "glm": VERMILLION, "probit": PURPLE, "dropout": GREEN}
#: Colours for a sequence of series (data sets, criteria) after the first.
SERIES = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY_BLUE, YELLOW, BLACK)


def use_in_matplotlib() -> None:
    """Make :data:`SERIES` matplotlib's default colour cycle (lines drawn without a colour)."""
    import matplotlib
    from cycler import cycler

    matplotlib.rcParams["axes.prop_cycle"] = cycler(color=list(SERIES))


# Every figure module imports this one, so its lines without an explicit colour get the palette too.
use_in_matplotlib()
