"""Validation during training: full-volume sCT of each validation subject, masked HU MAE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.metrics import Average
from monai.engines import Evaluator
from torch.utils.data import DataLoader

from pipeline.data.loaders import planes_for_mode
from pipeline.engine.trainer import plain_tensor, unwrap_ddp
from pipeline.errors import as_flag
from pipeline.sct.inference import predict_unit_volume
from pipeline.sct.tta import members_hu
from transforms.position import with_position_channels


class SCTValidator(Evaluator):
    """Batches of one whole volume (``mr`` normalised, ``ct`` in HU, ``mask``), inferred in windows of
    the training size exactly as at inference time (a multi-plane model: the mean over its ``planes``, as
    inference does without flip TTA; with ``position_channels`` the MR's position channels beside it). Key
    metric ``val_mae_hu`` (lower is better): mean over subjects of the HU MAE inside the body mask."""

    def __init__(
        self,
        *,
        device: torch.device | str,
        val_data_loader: DataLoader,
        generator: torch.nn.Module,
        mode: str,
        patch_size: int,
        slab_size: int = 5,
        overlap: float = 0.5,
        sw_batch_size: int | None = None,
        planes: Sequence[str] | str = ("axial",),
        position_channels: bool = False,
        val_handlers: Sequence | None = None,
    ) -> None:
        super().__init__(
            device=torch.device(device),
            val_data_loader=val_data_loader,
            key_val_metric={"val_mae_hu": Average(output_transform=lambda out: out["mae_hu"])},
            metric_cmp_fn=lambda current, best: best < 0 or current < best,  # Workflow starts best at -1
            val_handlers=val_handlers,
            decollate=False,
        )
        # DDP wrappers are bypassed: validation needs no gradient sync and must not issue collectives
        self.generator = unwrap_ddp(generator)
        self.planes = planes_for_mode(mode, planes)
        self.position_channels = as_flag(position_channels, name="position_channels")
        self.window = dict(mode=mode, patch_size=patch_size, slab_size=slab_size, overlap=overlap, sw_batch_size=sw_batch_size)

    def _iteration(self, engine: "SCTValidator", batchdata: dict) -> dict:
        mr = plain_tensor(batchdata["mr"][0])
        ct_hu = plain_tensor(batchdata["ct"][0]).float()
        mask = plain_tensor(batchdata["mask"][0]) > 0
        network_input = with_position_channels(mr, mask) if engine.position_channels else mr

        def predict(volume: torch.Tensor) -> torch.Tensor:
            return predict_unit_volume(engine.generator, volume, device=engine.state.device, **engine.window)

        sct_hu = members_hu(predict, network_input, planes=engine.planes).mean(dim=0, keepdim=True).cpu()
        mae = (sct_hu - ct_hu).abs()[mask].mean().item()
        return {"mae_hu": torch.tensor(mae), "mr": mr[0].cpu().numpy(), "sct_hu": sct_hu[0].numpy(),
                "ct_hu": ct_hu[0].cpu().numpy()}
