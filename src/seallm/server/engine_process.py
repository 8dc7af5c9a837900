"""The engine-core process: owns the device and runs :class:`seallm.engine.loop.EngineLoop`
over ZeroMQ.

It never does HTTP work: requests arrive as :mod:`seallm.engine.messages` over ZeroMQ and
outputs leave the same way, one message per iteration.
"""

from __future__ import annotations

import logging
import signal

import msgspec
import zmq

from seallm.deploy import DeploymentConfig
from seallm.engine.loop import EngineLoop
from seallm.engine.messages import EngineError, FromEngine, ToEngine

logger = logging.getLogger("seallm.engine")


def zmq_inbox(pull: zmq.Socket):
    """An :data:`~seallm.engine.loop.Inbox` over a PULL socket; undecodable messages are
    dropped and logged (a bad message must not stop the engine)."""
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    dec = msgspec.msgpack.Decoder(ToEngine)

    def inbox(timeout_ms: int):
        while poller.poll(timeout_ms):
            raw = pull.recv(copy=False)
            try:
                return dec.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                logger.error("dropped a message the engine cannot decode (%d bytes): %s", len(raw), e)
                timeout_ms = 0
        return None

    return inbox


def zmq_outbox(push: zmq.Socket, enc: msgspec.msgpack.Encoder):
    def outbox(msg: FromEngine) -> None:
        push.send(enc.encode(msg), copy=False)

    return outbox


def engine_main(cfg: DeploymentConfig, in_addr: str, out_addr: str) -> None:
    """Entry point of the engine process (spawned by the front end)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front end decides when to stop
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(in_addr)
    push = ctx.socket(zmq.PUSH)
    push.connect(out_addr)
    enc = msgspec.msgpack.Encoder()
    try:
        from seallm.deploy import build_engine

        if cfg.threads is not None:
            import torch

            torch.set_num_threads(cfg.threads)
        stack = build_engine(cfg)
    except Exception as e:  # report why, then exit
        push.send(enc.encode(EngineError(f"{type(e).__name__}: {e}")))
        push.close(linger=2000)
        ctx.term()
        return
    try:
        EngineLoop(stack.core, stack.model_configs, zmq_inbox(pull), zmq_outbox(push, enc),
                   cfg.max_waiting_requests, cfg.max_waiting_tokens, cfg.max_queue_delay_s).run()
        policy = stack.scheduler.policy
        if cfg.profiles_path and hasattr(policy, "save_profiles"):
            policy.save_profiles(cfg.profiles_path)
            logger.info("service profiles saved to %s", cfg.profiles_path)
    finally:
        pull.close(linger=0)
        push.close(linger=1000)
        ctx.term()
