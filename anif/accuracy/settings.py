"""The QBC threshold and its calibration's defaults (Smith et al., J. Chem. Phys. 148, 241733,
Fig. 1); free of numpy and torch, so the commands read them at start-up."""

#: The paper's calibrated QBC threshold rho_hat (kcal/mol): the default everywhere a threshold is needed.
RHO_HAT = 0.23
#: Error bound of the paper's rho_hat calibration (kcal/mol per sqrt(atom)): a structure whose worst
#: member misses the reference by more is "bad".
PAPER_ERROR_BOUND = 1.5
#: Fraction of the bad structures rho_hat must flag (the paper: 98%).
CAPTURE = 0.98
