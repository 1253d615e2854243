"""Tests for pipeline.data.phantoms.head_tissues: the detailed head's labels and property table."""

from __future__ import annotations

import numpy as np

from pipeline.data.phantoms.anatomy import Tissue
from pipeline.data.phantoms.head_tissues import HEAD_TISSUES, N_HEAD_TISSUES, HeadTissue

T = HeadTissue


def test_head_tissue_keeps_the_simple_heads_labels_and_adds_five():
    for tissue in Tissue:
        assert HeadTissue[tissue.name].value == tissue.value
    assert N_HEAD_TISSUES == len(HeadTissue) == len(Tissue) + 5
    assert [t.value for t in HeadTissue] == list(range(N_HEAD_TISSUES))  # labels are channels


def test_every_tissue_has_physically_ordered_properties():
    assert set(HEAD_TISSUES) == set(HeadTissue)
    for tissue, p in HEAD_TISSUES.items():
        assert 0.0 <= p.proton_density <= 1.0, tissue
        assert p.t1_ms[1] >= p.t1_ms[0], tissue  # T1 lengthens with the field
        assert p.t2star_ms[0] <= p.t2_ms[0] and p.t2star_ms[1] <= p.t2_ms[1], tissue  # T2* <= T2
        assert p.hu_sd_spatial >= 0.0
    hu = {t: HEAD_TISSUES[t].hu for t in HeadTissue}
    assert hu[T.ENAMEL] > hu[T.DENTINE] > hu[T.CORTICAL_BONE] > hu[T.DIPLOE] > hu[T.MARROW] > hu[T.MUSCLE]
    assert hu[T.MUSCLE] > hu[T.CSF] > hu[T.FAT] > hu[T.AIR] == hu[T.SINUS_AIR] == -1000.0


def test_bone_teeth_and_air_give_no_signal_at_clinical_echo_times_soft_tissues_do():
    te_ms = 2.0  # the shortest echo of the families' ranges
    for field in (0, 1):
        visible = {t: HEAD_TISSUES[t].proton_density * np.exp(-te_ms / HEAD_TISSUES[t].t2star_ms[field])
                   for t in HeadTissue}
        for dark in (T.AIR, T.SINUS_AIR, T.CORTICAL_BONE, T.ENAMEL, T.DENTINE):
            assert visible[dark] < 0.01, dark  # the MR ambiguity: air and bone look alike
        for bright in (T.FAT, T.WHITE_MATTER, T.GREY_MATTER, T.MUSCLE, T.MUCOSA, T.CSF):
            assert visible[bright] > 0.5, bright
