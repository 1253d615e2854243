"""Full-volume sCT inference time, split by stage, vs the bare network forward over the same windows.

    python -m scripts.benchmark_inference [--modes 2.5d 3d] [--overlap 0.5] [--sw-batch-size N] [--repeats 1]
        [--runtimes torch onnx] [--shape 160 192 112] [--planes axial coronal sagittal] [--tta] [--device cuda]
        [--batch N [--read-ahead R]]

The MR is a head phantom (``pipeline.data.phantoms.head``, default grid) upsampled with ``scipy.ndimage.zoom`` to
``--shape`` (default 256 x 256 x 180) and written at 1 mm on an oblique LPS-like grid (cached in
``--work-dir``). The generator is randomly initialised: speed does not depend on the weights.

Stages (the :class:`pipeline.sct.inference.SCTPredictor` methods, run one by one):
read (header checks, load, RAS), preprocessing (body mask from the MR unless ``--with-mask``, MR
normalisation), network (time inside the
generator's forward, measured by a timing wrapper), blending (the rest of the windowed inference:
slab construction, padding, window gathering, Gaussian weighting, accumulation), inversion (back to the
MR grid, air outside the body) and writing (int16 NIfTI, atomic).

``bare`` runs the same number of windows with the same batch shapes through the generator alone, on
random inputs. Each bare call runs right after its pipeline call (and is excluded from the pipeline's
times), so both see the same machine load: on a CPU shared with other jobs, a replay minutes later
measures the load drift, not the pipeline. ``whole / bare`` is the figure of merit (target <= 1.15):
what the pipeline costs on top of the network.

``--batch N`` then times ``predict_inputs`` over N copies of the MR (first mode only), one subject after the other
against pipelined (``--read-ahead`` subjects read and preprocessed ahead in threads, the last one written behind
the network: :mod:`pipeline.sct.batch`); per volume, and against the single volume's ``bare``.

``--runtimes torch onnx`` also exports the same randomly initialised generator to ONNX
(:mod:`pipeline.sct.onnx_runtime`) and runs the whole pipeline with onnxruntime in the same process,
right after PyTorch; ``onnx / torch`` is the ratio of their times (below 1: ONNX is faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from networks import Pix2PixUNet
from pipeline.data.loaders import input_channels, spatial_dims
from pipeline.data.phantoms.head import make_phantom_subject
from pipeline.io.volumes import write_like_reference
from pipeline.sct.batch import READ_AHEAD
from pipeline.sct.inference import WINDOW_BATCH, SCTPredictor
from pipeline.sct.onnx_runtime import OnnxGenerator, export_onnx

#: mode -> (patch size, num_downs): the bundle's 2.5D default, and a CPU-sized 3D configuration.
CONFIGS = {"2d": (128, 6), "2.5d": (128, 6), "3d": (64, 5)}  # train.json defaults (3D: the docs' 64^3 windows)
STAGES = ("read", "preprocessing", "network", "blending", "inversion", "writing")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedNetwork(torch.nn.Module):
    """Wraps a network: accumulates the wall time of its forward (``seconds``) and, after each call, the
    time of a bare forward of random input of the same shape (``bare_seconds``, not part of ``seconds``)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.reset()
        self._random_inputs: dict[tuple[int, ...], torch.Tensor] = {}

    def reset(self) -> None:
        self.seconds = self.bare_seconds = 0.0
        self.windows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        y = self.network(x)
        _synchronize(y.device)
        self.seconds += time.perf_counter() - start
        self.bare_seconds += bare_forward_seconds(self.network, self._random_input(x))
        self.windows += x.shape[0]
        return y

    def _random_input(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        if shape not in self._random_inputs:
            self._random_inputs[shape] = torch.rand(shape, device=x.device) * 2 - 1
        return self._random_inputs[shape]


def make_mr(work_dir: Path, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    """Phantom MR (and its mask) upsampled to ``shape`` at 1 x 1 x 1 mm (oblique LPS-like direction kept)."""
    stem = "x".join(map(str, shape))
    path, mask_path = work_dir / f"mr_{stem}.nii.gz", work_dir / f"mask_{stem}.nii.gz"
    if path.exists() and mask_path.exists():
        return path, mask_path
    subject = make_phantom_subject(seed=0, size="default")
    factors = [n / m for n, m in zip(shape, subject.mr.shape)]
    mr = ndimage.zoom(subject.mr, factors, order=1).astype(np.float32)
    mask = ndimage.zoom(subject.mask, factors, order=0).astype(np.uint8)
    direction = subject.affine[:3, :3] / np.linalg.norm(subject.affine[:3, :3], axis=0)
    affine = np.eye(4)
    affine[:3, :3] = direction  # 1 mm voxels
    affine[:3, 3] = -direction @ ((np.asarray(shape) - 1) / 2.0)  # centred on the world origin
    work_dir.mkdir(parents=True, exist_ok=True)
    for array, out in ((mr, path), (mask, mask_path)):
        image = nib.Nifti1Image(array, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        nib.save(image, out)
    return path, mask_path


@torch.no_grad()
def bare_forward_seconds(network: torch.nn.Module, x: torch.Tensor) -> float:
    """Wall time of one forward of ``network`` alone."""
    start = time.perf_counter()
    network(x)
    _synchronize(x.device)
    return time.perf_counter() - start


def run_mode(mode: str, mr_path: Path, mask_path: Path | None, out_dir: Path, args: argparse.Namespace,
             *, runtime: str = "torch") -> dict[str, float]:
    patch_size, num_downs = CONFIGS[mode]
    if mode == "3d" and args.patch_size_3d:
        patch_size = args.patch_size_3d
    if mode != "3d" and args.patch_size_2d:
        patch_size = args.patch_size_2d
    network = make_network(mode, args)
    if runtime == "onnx":  # the same weights (seed 0), exported and run by onnxruntime
        onnx_path = export_onnx(network, out_dir / f"generator_{mode}.onnx", patch_size=patch_size,
                                in_channels=input_channels(mode=mode, slab_size=args.slab_size),
                                spatial_dims=spatial_dims(mode), overwrite=True)
        network = OnnxGenerator(onnx_path, threads=args.threads)
    device = torch.device(args.device)
    timed = TimedNetwork(network)
    predictor = make_predictor(timed, mode, patch_size, args)
    window_batch = args.sw_batch_size or WINDOW_BATCH["cuda" if device.type == "cuda" else "cpu"]
    warm = torch.zeros(window_batch, input_channels(mode=mode, slab_size=args.slab_size),
                       *([patch_size] * spatial_dims(mode)), device=device)
    with torch.no_grad():  # first call builds the oneDNN kernels: keep it out of both timings
        network.eval()(warm)

    times = {stage: 0.0 for stage in STAGES}
    bare, windows = 0.0, 0
    for _ in range(args.repeats):
        timed.reset()
        clock = time.perf_counter()
        data = predictor.load(mr_path, mask_path=mask_path, subject_id="bench")
        times["read"] += (now := time.perf_counter()) - clock
        data = predictor.preprocess(data)
        times["preprocessing"] += (clock := time.perf_counter()) - now
        data = predictor.infer(data)
        sliding_window = (now := time.perf_counter()) - clock - timed.bare_seconds
        times["network"] += timed.seconds
        times["blending"] += sliding_window - timed.seconds
        hu = predictor.restore(data)
        times["inversion"] += (clock := time.perf_counter()) - now
        write_like_reference(hu, reference_path=mr_path, out_path=out_dir / f"sct_{mode}.nii.gz",
                             dtype=np.int16, overwrite=True)
        times["writing"] += time.perf_counter() - clock
        windows += timed.windows
        bare += timed.bare_seconds
    result = {stage: seconds / args.repeats for stage, seconds in times.items()}
    result["whole"] = sum(result[stage] for stage in STAGES)
    result["bare"] = bare / args.repeats
    result["windows"] = windows / args.repeats
    result["patch"] = patch_size
    result["num_downs"] = num_downs
    return result


def make_network(mode: str, args: argparse.Namespace) -> Pix2PixUNet:
    """The generator of ``mode`` (:data:`CONFIGS`), randomly initialised with seed 0."""
    torch.manual_seed(0)
    return Pix2PixUNet(spatial_dims=spatial_dims(mode), in_channels=input_channels(mode=mode, slab_size=args.slab_size),
                       num_downs=CONFIGS[mode][1], base_channels=args.base_channels, norm="instance")


def make_predictor(network: torch.nn.Module, mode: str, patch_size: int, args: argparse.Namespace) -> SCTPredictor:
    """The pipeline around ``network`` with the command line's window, TTA, planes and device."""
    return SCTPredictor(network, mode=mode, patch_size=patch_size, slab_size=args.slab_size, overlap=args.overlap,
                        sw_batch_size=args.sw_batch_size, device=torch.device(args.device), progress=False,
                        tta=args.tta, planes=args.planes if mode == "2.5d" else ("axial",))


def run_batch(mode: str, mr_path: Path, work_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per volume of ``predict_inputs`` over ``--batch`` copies of the MR (links in one folder; body masks
    derived from the MR), one subject after the other (``read_ahead`` 0) and pipelined (``--read-ahead``: reading
    and preprocessing ahead, writing behind the network; :mod:`pipeline.sct.batch`), alternated ``--repeats`` times
    on the same machine load."""
    predictor = make_predictor(make_network(mode, args), mode, CONFIGS[mode][0], args)
    folder = work_dir / "batch"
    folder.mkdir(exist_ok=True)
    for index in range(args.batch):
        link = folder / f"S{index:03d}.nii.gz"
        if not link.exists():
            link.symlink_to(mr_path.resolve())
    seconds = {"one after the other": 0.0, f"read ahead {args.read_ahead}": 0.0}
    for _ in range(args.repeats):
        for name, read_ahead in zip(seconds, (0, args.read_ahead)):
            clock = time.perf_counter()
            predictor.predict_inputs(folder, output_dir=work_dir / "batch_out", overwrite=True, read_ahead=read_ahead)
            _synchronize(predictor.device)
            seconds[name] += (time.perf_counter() - clock) / (args.batch * args.repeats)
    return seconds


def print_table(results: dict[str, dict[str, float]], *, shape, args: argparse.Namespace) -> None:
    modes = list(results)
    mask = "mask file given" if args.with_mask else "body mask derived from the MR"
    window_batch = args.sw_batch_size or f"auto ({WINDOW_BATCH['cuda' if args.device.startswith('cuda') else 'cpu']})"
    print(f"\nMR {shape[0]}x{shape[1]}x{shape[2]} at 1 mm, {mask}; overlap {args.overlap}, sw_batch_size "
          f"{window_batch}, {torch.get_num_threads()} threads, device {args.device}, repeats {args.repeats}; "
          f"2.5D planes {' '.join(args.planes)}, flip TTA {'on' if args.tta else 'off'}")
    print("config        " + "".join(f"{m:>22}" for m in modes))
    print("              " + "".join(
        f"{'P' + str(int(results[m]['patch'])) + ' d' + str(int(results[m]['num_downs'])) + ' ' + str(int(results[m]['windows'])) + ' win':>22}"
        for m in modes))
    for stage in (*STAGES, "whole", "bare"):
        cells = []
        for m in modes:
            r = results[m]
            share = f"{100 * r[stage] / r['whole']:5.1f} %" if stage not in ("whole", "bare") else ""
            cells.append(f"{r[stage]:9.2f} s {share:>8}")
        print(f"{stage:<14}" + "".join(f"{c:>22}" for c in cells))
    print(f"{'whole / bare':<14}" + "".join(f"{results[m]['whole'] / results[m]['bare']:>22.3f}" for m in modes))
    print(f"{'window / bare':<14}" + "".join(
        f"{(results[m]['network'] + results[m]['blending']) / results[m]['bare']:>22.3f}" for m in modes))
    for mode in (m for m in modes if m.endswith(" onnx") and m[: -len(" onnx")] in results):
        torch_result, onnx_result = results[mode[: -len(" onnx")]], results[mode]
        print(f"{mode[: -len(' onnx')]}: onnx / torch  whole {onnx_result['whole'] / torch_result['whole']:.3f}, "
              f"network {onnx_result['network'] / torch_result['network']:.3f}")


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["2.5d", "3d"], choices=list(CONFIGS))
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch-size", type=int, default=None,
                        help="windows per network call (default: the pipeline's, 16 on the CPU, 128 on a GPU)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 180], help="MR voxels (1 mm)")
    parser.add_argument("--patch-size-3d", type=int, default=None, help="3D window (default 64)")
    parser.add_argument("--patch-size-2d", type=int, default=None, help="2D/2.5D window (default 128)")
    parser.add_argument("--planes", nargs="+", default=["axial"], help="2.5D planes (multi-plane: axial coronal sagittal)")
    parser.add_argument("--tta", action="store_true", help="flip TTA (a mirrored member per plane)")
    parser.add_argument("--slab-size", type=int, default=5)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--with-mask", action="store_true",
                        help="give the phantom's body mask file (as SynthRAD does) instead of deriving it from the MR")
    parser.add_argument("--runtimes", nargs="+", default=["torch"], choices=["torch", "onnx"],
                        help="also run the generator exported to ONNX with onnxruntime (same run, right after PyTorch)")
    parser.add_argument("--work-dir", type=Path, default=None, help="cache for the MR and outputs (default: a temp dir)")
    parser.add_argument("--batch", type=int, default=0, help="also time predict_inputs over this many subjects "
                        "(copies of the MR, body masks derived), one after the other against pipelined (first mode only)")
    parser.add_argument("--read-ahead", type=int, default=READ_AHEAD["cuda"], help="subjects read ahead in the batch run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or Path(tmp)
        mr_path, mask_path = make_mr(work_dir, tuple(args.shape))
        results = {}
        for mode in args.modes:
            for runtime in args.runtimes:
                name = mode if runtime == "torch" else f"{mode} {runtime}"
                results[name] = run_mode(mode, mr_path, mask_path if args.with_mask else None, work_dir, args,
                                         runtime=runtime)
                print(f"{name}: whole {results[name]['whole']:.1f} s, bare {results[name]['bare']:.1f} s", flush=True)
        print_table(results, shape=args.shape, args=args)
        if args.batch:
            mode = args.modes[0]
            batch = run_batch(mode, mr_path, work_dir, args)
            bare = results[mode]["bare"]
            print(f"\nbatch of {args.batch} subjects ({mode}, predict_inputs, s per volume):")
            for name, seconds in batch.items():
                print(f"  {name:<22} {seconds:8.2f} s   whole / bare {seconds / bare:7.2f}")
            first, second = batch.values()
            print(f"  pipelined / one after the other {second / first:.3f}")
            results[f"{mode} batch"] = batch
    return results


if __name__ == "__main__":
    main()
