"""The active-learning campaign (Smith et al. 2018, Fig. 2): config, ledger, oracles, selection,
the loop and its reports. ``anif al run|status|report`` (anif/cli/al.py) drive it."""

from .campaign import Campaign, run_campaign
from .config import Config, load_config, parse_config
from .oracles import Oracle, PySCFOracle, TeacherOracle, make_oracle
from .report import status, write_report

__all__ = [
    "Campaign",
    "Config",
    "Oracle",
    "PySCFOracle",
    "TeacherOracle",
    "load_config",
    "make_oracle",
    "parse_config",
    "run_campaign",
    "status",
    "write_report",
]
