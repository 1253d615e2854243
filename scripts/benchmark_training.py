"""Training throughput of the Pix2Pix engine vs a bare PyTorch loop (same networks, same batches).

    python -m scripts.benchmark_training [--iterations 20] [--modes 2.5d 3d]

Reports samples/s for each configuration and the ratio engine / bare loop (target >= 0.9: MONAI's
engine and handlers should cost next to nothing). Runs alternate and the best of ``--repeats`` is
kept: on a shared 2-core machine single runs vary by 10-20 %. Batches are pre-built random tensors of the
training shapes, so the figure is the network + engine cost, not data loading (CacheDataset keeps
loading out of the loop in real training).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from networks import ConditionalPatchDiscriminator, Pix2PixGeneratorLoss, Pix2PixUNet
from networks.losses import discriminator_loss
from pipeline.data.loaders import input_channels, patch_shape, spatial_dims
from pipeline.engine.trainer import Pix2PixTrainer, pix2pix_adam

CONFIGS = {  # mode -> (patch size, crops per iteration, num_downs): the bundle's 2.5D default is
    "2.5d": (64, 16, 6),  # batch_size 2 x samples_per_volume 8
    "3d": (32, 2, 5),
}


def make_networks(mode: str, *, patch: int, num_downs: int, slab_size: int, base_channels: int):
    torch.manual_seed(0)
    dims, cin = spatial_dims(mode), input_channels(mode=mode, slab_size=slab_size)
    g = Pix2PixUNet(spatial_dims=dims, in_channels=cin, num_downs=num_downs, base_channels=base_channels)
    d = ConditionalPatchDiscriminator(spatial_dims=dims, in_channels=cin + 1, base_channels=base_channels)
    return g, d, Pix2PixGeneratorLoss(spatial_dims=dims)


def make_batches(mode: str, *, patch: int, batch: int, slab_size: int, n: int) -> list[dict]:
    shape = patch_shape(mode=mode, patch_size=patch, slab_size=slab_size)
    spatial = shape if mode == "3d" else shape[:2]
    cin = input_channels(mode=mode, slab_size=slab_size)
    gen = torch.Generator().manual_seed(0)
    return [{"mr": torch.rand(cin, *spatial, generator=gen) * 2 - 1,
             "ct": torch.rand(1, *spatial, generator=gen) * 2 - 1,
             "mask": torch.ones(1, *spatial)} for _ in range(n * batch)]


def bare_loop(g, d, g_loss, loader, iterations: int) -> float:
    g_opt, d_opt = pix2pix_adam(g.parameters()), pix2pix_adam(d.parameters())
    start, done = time.perf_counter(), 0
    for batch in loader:
        mr, ct = batch["mr"], batch["ct"]
        fake = g(mr)
        d_opt.zero_grad(set_to_none=True)
        logits = d(torch.cat([mr, mr]), torch.cat([ct, fake.detach()]))[-1]
        discriminator_loss(*logits.chunk(2)).backward()
        d_opt.step()
        g_opt.zero_grad(set_to_none=True)
        g_loss(fake=fake, real=ct, fake_features=d(mr, fake))["total"].backward()
        g_opt.step()
        done += 1
        if done == iterations:
            break
    return time.perf_counter() - start


def engine_loop(g, d, g_loss, loader, iterations: int) -> float:
    trainer = Pix2PixTrainer(device="cpu", max_epochs=1, epoch_length=iterations, train_data_loader=loader,
                             generator=g, discriminator=d, g_optimizer=pix2pix_adam(g.parameters()),
                             d_optimizer=pix2pix_adam(d.parameters()), g_loss=g_loss)
    start = time.perf_counter()
    trainer.run()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--modes", nargs="+", default=list(CONFIGS))
    parser.add_argument("--slab-size", type=int, default=5)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="alternate engine/bare runs, keep the best of each")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print(f"{'mode':6} {'patch':>7} {'batch':>5} {'bare samples/s':>15} {'engine samples/s':>17} {'ratio':>6}")
    for mode in args.modes:
        patch, batch, num_downs = CONFIGS[mode]
        data = make_batches(mode, patch=patch, batch=batch, slab_size=args.slab_size, n=args.iterations + 2)
        loader = DataLoader(data, batch_size=batch, shuffle=False)
        times = {"bare": [], "engine": []}
        g, d, g_loss = make_networks(mode, patch=patch, num_downs=num_downs, slab_size=args.slab_size, base_channels=args.base_channels)
        bare_loop(g, d, g_loss, loader, 2)  # warm-up (allocator, kernels) for both paths
        engine_loop(*make_networks(mode, patch=patch, num_downs=num_downs, slab_size=args.slab_size, base_channels=args.base_channels), loader, 2)
        for repeat in range(args.repeats):
            order = (("bare", bare_loop), ("engine", engine_loop))
            for name, fn in order if repeat % 2 == 0 else order[::-1]:  # neither path always runs second
                g, d, g_loss = make_networks(mode, patch=patch, num_downs=num_downs, slab_size=args.slab_size, base_channels=args.base_channels)
                times[name].append(fn(g, d, g_loss, loader, args.iterations))
        bare = args.iterations * batch / min(times["bare"])
        engine = args.iterations * batch / min(times["engine"])
        print(f"{mode:6} {patch:>7} {batch:>5} {bare:>15.2f} {engine:>17.2f} {engine / bare:>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
