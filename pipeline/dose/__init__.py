"""Dosimetric evaluation of synthetic CT: photon and proton plans optimised on the CT and recomputed on
the sCT (pyRadPlan), compared with gamma, DVH metrics and proton range (WEPL).

Modules: :mod:`.calibration` (HU -> relative stopping power / electron density), :mod:`.plans`
(pyRadPlan wrapper), :mod:`.compare` (gamma, DVH), :mod:`.wepl` (water-equivalent path length, range
shift), :mod:`.evaluate` (per-subject driver, CLI). pyRadPlan and pymedphys come with the ``dose`` extra
(``pip install -e .[dose]``) and are only imported where they are used.
"""
