"""Tissues of the detailed head phantoms: labels, CT numbers and MR relaxation at 1.5 T and 3 T.

:class:`HeadTissue` keeps the ten labels of :class:`pipeline.data.phantoms.anatomy.Tissue` (same names and
values, so :func:`~pipeline.data.phantoms.anatomy.paint_head` paints into the same channels) and adds the
tissues of the skull base, face and neck. :data:`HEAD_TISSUES` is the documented property table the
detailed generator (:mod:`pipeline.data.phantoms.detailed_head`) draws each subject's values from; the
docs (``docs/head_phantoms.md``) cite it.

Values are textbook-like, not measurements: what matters for the benchmark is that they differ between
tissues the way real ones do (bone and air both dark in MR, fat bright in T1, fluid bright in T2), and
that each subject gets its own draw (:data:`SUBJECT_JITTER`) so no fixed intensity -> HU map exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pipeline.data.phantoms.anatomy import Tissue

__all__ = ["HEAD_TISSUES", "N_HEAD_TISSUES", "SUBJECT_JITTER", "HeadTissue", "HeadTissueProperties"]


class HeadTissue(IntEnum):
    """Label (= channel of the fraction stack) of every tissue of the detailed head."""

    AIR = 0  # outside the head
    SOFT_TISSUE = 1  # skin, scalp, face, fibrous tissue
    FAT = 2
    CORTICAL_BONE = 3  # tables, skull base, sinus walls, septa of air cells, cortex of vertebrae and jaw
    DIPLOE = 4  # trabecular bone of the skull with fatty marrow
    CSF = 5  # also fluid in a diseased sinus (same relaxation, same HU)
    GREY_MATTER = 6
    WHITE_MATTER = 7
    VITREOUS = 8
    SINUS_AIR = 9  # every air space inside the head: sinuses, nasal cavity, air cells, ear canal, pharynx, mouth
    MUCOSA = 10  # lining of the air spaces, turbinates
    MUSCLE = 11  # neck muscles, tongue
    ENAMEL = 12
    DENTINE = 13  # dentine and tooth roots
    MARROW = 14  # red/yellow marrow of vertebrae, jaw and palate


assert all(HeadTissue[t.name] == t.value for t in Tissue), "HeadTissue must keep anatomy.Tissue's labels"
N_HEAD_TISSUES = len(HeadTissue)


@dataclass(frozen=True)
class HeadTissueProperties:
    """CT and MR properties of one tissue.

    ``hu``: nominal CT number (HU); ``hu_sd_spatial``: SD (HU) of its smooth variation within a subject
    (bone density, texture). ``proton_density`` relative to water; ``t1_ms`` at (1.5 T, 3 T); ``t2_ms``
    (spin echo) and ``t2star_ms`` (gradient echo) at (1.5 T, 3 T).
    """

    hu: float
    hu_sd_spatial: float
    proton_density: float
    t1_ms: tuple[float, float]
    t2_ms: tuple[float, float]
    t2star_ms: tuple[float, float]


T = HeadTissue
#: Per-tissue properties. Cortical bone, enamel and dentine have (almost) no signal at any echo time a
#: clinical sequence uses (T2* < 1 ms): dark like air, the ambiguity MR -> CT must resolve from context.
HEAD_TISSUES: dict[HeadTissue, HeadTissueProperties] = {
    T.AIR: HeadTissueProperties(-1000.0, 0.0, 0.0, (1.0, 1.0), (1.0, 1.0), (1.0, 1.0)),
    T.SOFT_TISSUE: HeadTissueProperties(40.0, 6.0, 0.72, (900.0, 1200.0), (55.0, 50.0), (30.0, 25.0)),
    T.FAT: HeadTissueProperties(-100.0, 8.0, 0.90, (260.0, 380.0), (85.0, 75.0), (35.0, 20.0)),
    T.CORTICAL_BONE: HeadTissueProperties(1450.0, 200.0, 0.05, (250.0, 300.0), (1.0, 1.0), (0.4, 0.3)),
    T.DIPLOE: HeadTissueProperties(500.0, 110.0, 0.45, (450.0, 550.0), (60.0, 55.0), (8.0, 5.0)),
    T.CSF: HeadTissueProperties(8.0, 2.0, 1.00, (4000.0, 4300.0), (2000.0, 1800.0), (1200.0, 900.0)),
    T.GREY_MATTER: HeadTissueProperties(40.0, 3.0, 0.82, (1150.0, 1650.0), (95.0, 85.0), (60.0, 48.0)),
    T.WHITE_MATTER: HeadTissueProperties(26.0, 3.0, 0.70, (780.0, 1080.0), (75.0, 70.0), (55.0, 42.0)),
    T.VITREOUS: HeadTissueProperties(10.0, 2.0, 1.00, (3800.0, 4100.0), (1500.0, 1400.0), (1000.0, 800.0)),
    T.SINUS_AIR: HeadTissueProperties(-1000.0, 0.0, 0.0, (1.0, 1.0), (1.0, 1.0), (1.0, 1.0)),
    T.MUCOSA: HeadTissueProperties(35.0, 6.0, 0.85, (1100.0, 1400.0), (120.0, 100.0), (45.0, 35.0)),
    T.MUSCLE: HeadTissueProperties(50.0, 6.0, 0.75, (1000.0, 1400.0), (42.0, 35.0), (28.0, 22.0)),
    T.ENAMEL: HeadTissueProperties(2900.0, 150.0, 0.0, (1.0, 1.0), (0.1, 0.1), (0.05, 0.05)),
    T.DENTINE: HeadTissueProperties(1800.0, 200.0, 0.10, (300.0, 350.0), (0.5, 0.5), (0.3, 0.25)),
    T.MARROW: HeadTissueProperties(320.0, 90.0, 0.70, (600.0, 750.0), (65.0, 60.0), (12.0, 8.0)),
}
del T

#: Per-subject variation drawn once per tissue and subject: log-normal SDs of PD, T1 and T2/T2* (ageing,
#: hydration, the scanner's calibration) and the SD of a per-subject HU offset (calibration, density).
SUBJECT_JITTER = {"proton_density": 0.05, "t1": 0.08, "t2": 0.10, "hu": 8.0}
