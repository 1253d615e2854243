"""Validation during 2-D paired training (SE -> DE): whole-image prediction, MAE in target units, and a
TensorBoard panel condition | predicted target 1 | true target 1 | predicted target 2 | ..."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Average
from monai.engines import Evaluator
from torch.utils.data import DataLoader

from pipeline.engine.handlers import to_display_range
from pipeline.engine.trainer import plain_tensor, unwrap_ddp
from pipeline.xray.data import TARGET_KEY, IntensityWindow, body_mask_2d
from pipeline.xray.inference import predict_unit_image


class PairedImageValidator(Evaluator):
    """Batches of one whole image (``image_key`` in [-1, 1], :data:`TARGET_KEY` in physical units).

    Key metric ``val_mae`` (lower is better): mean over images of the MAE (physical units, e.g. log
    attenuation) inside the body (:func:`body_mask_2d` of the condition), averaged over target channels.
    Also ``val_mae_<key>`` per target key.
    """

    def __init__(self, *, device: torch.device | str, val_data_loader: DataLoader, generator: torch.nn.Module,
                 windows: Mapping[str, IntensityWindow], image_key: str, target_keys: Sequence[str], divisor: int,
                 val_handlers: Sequence | None = None) -> None:
        self.target_keys = list(target_keys)
        extra = {f"val_mae_{k}": Average(output_transform=lambda out, i=i: out["mae"][i])
                 for i, k in enumerate(self.target_keys)}
        super().__init__(
            device=torch.device(device),
            val_data_loader=val_data_loader,
            key_val_metric={"val_mae": Average(output_transform=lambda out: out["mae"].mean())},
            additional_metrics=extra,
            metric_cmp_fn=lambda current, best: best < 0 or current < best,  # Workflow starts best at -1
            val_handlers=val_handlers,
            decollate=False,
        )
        # DDP wrappers are bypassed: validation needs no gradient sync and must not issue collectives
        self.generator = unwrap_ddp(generator)
        self.windows = windows
        self.image_key = image_key
        self.divisor = divisor

    def _iteration(self, engine: "PairedImageValidator", batchdata: dict) -> dict:
        image_unit = plain_tensor(batchdata[engine.image_key][0])
        truth = plain_tensor(batchdata[TARGET_KEY][0]).float().cpu()
        unit = predict_unit_image(engine.generator, image_unit, divisor=engine.divisor, device=engine.state.device)
        prediction = engine.windows["target"].from_unit(unit)
        image = engine.windows["image"].from_unit(image_unit.float().cpu())
        body = body_mask_2d(image[0])
        mae = torch.stack([(prediction[c] - truth[c]).abs()[body].mean() for c in range(truth.shape[0])])
        return {"mae": mae, "image": image[0].numpy(), "prediction": prediction.numpy(), "truth": truth.numpy()}


def paired_panel(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(1, H, W * (1 + 2C))`` in [0, 1]: condition | pred_1 | true_1 | ... | pred_C | true_C.

    Each predicted/true pair shares one grey window (1st-99.5th percentile of the true image), so a
    brightness difference between them is a real error, not a display artefact.
    """
    tiles = [to_display_range(image, *np.percentile(image, [1.0, 99.5]))]
    for pred, true in zip(prediction, truth):
        lo, hi = np.percentile(true, [1.0, 99.5])
        tiles += [to_display_range(pred, lo, hi), to_display_range(true, lo, hi)]
    return np.concatenate(tiles, axis=1)[None].astype(np.float32)


class PairedImagePanel:
    """TensorBoard image of the first validation pair at every validation, tag
    ``validation/<image_key>|pred <k1>|true <k1>|...``; step = the trainer's epoch."""

    def __init__(self, *, image_key: str, target_keys: Sequence[str], summary_writer=None,
                 log_dir: str | None = None) -> None:
        if summary_writer is None:
            from torch.utils.tensorboard import SummaryWriter

            summary_writer = SummaryWriter(log_dir=log_dir)
        self.writer = summary_writer
        self.tag = "validation/" + "|".join([image_key] + [f"{w} {k}" for k in target_keys for w in ("pred", "true")])

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        self.writer.add_image(self.tag, paired_panel(out["image"], out["prediction"], out["truth"]),
                              global_step=engine.state.epoch)
        self.writer.flush()


__all__: Sequence[str] = ["PairedImageValidator", "paired_panel", "PairedImagePanel"]
