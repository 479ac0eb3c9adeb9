"""The active-learning campaign (Smith et al. 2018, Fig. 2): config, ledger (every SQL statement,
typed records), the oracle a config names, selection, the stages (:mod:`anif.al.stages`, one module per box of
Fig. 2), the driver (:mod:`anif.al.campaign`) and its reports. ``anif al run|status|report`` (anif/cli/al.py) drive it. Its names load
their submodule on first use, so importing the package stays cheap."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "campaign": ("Campaign", "run_campaign"),
    "config": ("Config", "load_config", "parse_config"),
    "oracles": ("make_oracle",),
    "report": ("compare", "status", "write_report"),
})
