"""A model version's worker process: loads an MLflow model and predicts batches.

``python -m hubforge.models.worker --model-dir DIR --listen HOST:PORT --key-file PATH``

It runs the model owner's code (an MLflow model is pickled Python), so it runs as the
owner (their system account, their container, their pod) and holds no secret but its
own key. It never speaks HTTP to callers: the ``models`` service authenticates them,
checks their input against the signature and sends batches here over
:mod:`hubforge.models.protocol`. With ``--fetch URL`` (Kubernetes) it first downloads the
version's archive from the service, sending its key. ``--key-file -`` reads the key from
the first line of standard input (how the local backend passes it: never on a command
line, where every account could read it). Once listening it prints
``hubforge-model-worker listening on PORT`` to standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hmac
import os
import signal
import sys
import tempfile
import time
import traceback

from .protocol import ProtocolError, encode, read_frame

#: numpy dtypes of MLflow's column types; strings keep pandas' own inference, as in the
#: notebook the model was trained in.
DTYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32", "boolean": "bool"}


class LoadedModel:
    """An MLflow pyfunc model and what the front needs to know about it."""

    def __init__(self, path: str):
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(path)
        schema = self.model.metadata.get_input_schema()
        self.types: dict[str, str] = {}
        if schema is not None and not schema.is_tensor_spec():
            self.types = {c.name: c.type.name for c in schema.inputs if getattr(c.type, "name", None)}
        # The front has already checked every value against the signature, and the frame
        # is converted to the signature's dtypes below; so the flavour's own predict is
        # called, skipping pyfunc's second schema check (about 2 ms per call for a
        # scikit-learn pipeline, a quarter of its predict). Models without a signature, or
        # flavours without that attribute, go through pyfunc.predict.
        impl = getattr(self.model, "_model_impl", None)
        self.fast = impl.predict if schema is not None and self.types and hasattr(impl, "predict") else None

    def frame(self, message: dict):
        import numpy as np
        import pandas as pd

        if "tensor" in message:
            return np.asarray(message["tensor"], dtype=message.get("dtype") or "float64")
        # Each column becomes its array once, already of the signature's dtype (changing
        # a DataFrame's column dtypes afterwards costs far more than the predict of a
        # small model). A null in an integer column leaves that column to pandas.
        columns = {}
        for name, values in message["columns"].items():
            dtype = DTYPES.get(self.types.get(name, ""))
            if dtype is not None and not (dtype == "bool" and None in values):  # no silent False
                with contextlib.suppress(TypeError, ValueError):
                    values = np.asarray(values, dtype=dtype)
            columns[name] = values
        return pd.DataFrame(columns)

    def predict(self, message: dict) -> list:
        data = self.frame(message)
        if self.fast is not None:
            result = self.fast(data)
        else:
            result = self.model.predict(data)
        return jsonable_predictions(result)


def jsonable_predictions(result) -> list:
    import numpy as np
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        return result.to_dict(orient="records")
    if isinstance(result, (pd.Series, np.ndarray)):
        return result.tolist()
    if isinstance(result, dict):
        return [result]
    return list(result)


async def serve(model: LoadedModel, key: str, host: str, port: int) -> None:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = await asyncio.wait_for(read_frame(reader), 10)
            if not hmac.compare_digest(str(hello.get("key", "")).encode(), key.encode()):
                return
            writer.write(encode({"ok": True, "pid": os.getpid()}))
            while True:
                message = await read_frame(reader)
                start = time.perf_counter()
                try:
                    predictions = model.predict(message)
                    reply = {"ok": True, "predictions": predictions, "ms": 1000 * (time.perf_counter() - start)}
                except Exception as e:  # the model's own error: told to the front, logged here
                    traceback.print_exc(file=sys.stderr)
                    reply = {"ok": False, "error": f"{type(e).__name__}: {_first_line(e)}"}
                writer.write(encode(reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ProtocolError, asyncio.TimeoutError):
            return  # the front went away, or never knew the key: nothing to answer
        finally:
            writer.close()

    server = await asyncio.start_server(connection, host, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"hubforge-model-worker listening on {bound}", flush=True)
    async with server:
        await server.serve_forever()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:500] if text else ""


def fetch(url: str, key: str, dest: str) -> None:
    """Download a version's archive from the models service and unpack it into `dest`."""
    from .archive import unpack
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryFile() as tmp:
        with urllib.request.urlopen(request, timeout=120) as response:
            while chunk := response.read(1 << 20):
                tmp.write(chunk)
        tmp.seek(0)
        unpack(tmp, dest, max_bytes=64 * 2**30)


def main(argv: list[str] | None = None) -> None:
    # SIGTERM (the service unloading this version) ends the process through the normal
    # exit path, so the temporary model folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    parser = argparse.ArgumentParser(prog="python -m hubforge.models.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="", help="the MLflow model directory (MLmodel at its top); "
                        "with --fetch, default: a private temporary folder removed at exit")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any free one)")
    parser.add_argument("--key-file", required=True, help="file holding the worker's key; '-': standard input")
    parser.add_argument("--fetch", default="", help="URL of the version's archive to download first")
    args = parser.parse_args(argv)
    if args.key_file == "-":
        key = sys.stdin.readline().strip()
    else:
        with open(args.key_file) as f:
            key = f.read().strip()
    if not key:
        parser.error("the key is empty")
    if not args.model_dir and not args.fetch:
        parser.error("give --model-dir, --fetch, or both")
    with contextlib.ExitStack() as stack:
        model_dir = args.model_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="hubforge-model-"))
        if args.fetch:
            fetch(args.fetch, key, model_dir)
        host, _, port = args.listen.rpartition(":")
        model = LoadedModel(model_dir)
        # What is loaded now (libraries, the model) lives as long as the process: kept
        # out of the garbage collector's full passes, which would otherwise walk it all
        # (hundreds of thousands of objects for pandas and scikit-learn) in the middle
        # of a predict call now and then, tens of milliseconds each.
        gc.collect()
        gc.freeze()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(model, key, host.strip("[]") or "127.0.0.1", int(port or 0)))


if __name__ == "__main__":
    main()
