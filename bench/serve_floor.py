"""The floor under any uvicorn + FastAPI server of a celestial model, for bench_serve.

A FastAPI app whose ``POST /predict`` does only what the HTTP side of
celestial-serve must do before any model runs: read the raw image body, decode
and preprocess it exactly as training did, and answer a JSON body of the usual
size. No model, no LitServe, no queues. What it sustains under the benchmark's
load bounds what a real server on the same stack can reach.

    python bench/serve_floor.py --port 8123 --image-size 16 --color-mode rgb
"""

# No ``from __future__ import annotations``: FastAPI must see the real
# ``Annotated[..., Depends(image)]`` of a route defined inside ``main``.

import argparse
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from celestial_data import ImageFormat, decode, to_array

ANSWER = {
    "label": "Earth",
    "probability": 0.996682,
    "unknown": False,
    "score": 76.171134,
    "threshold": 188.494031,
    "top_k": [{"label": "Earth", "probability": 0.996682}] * 5,
    "model": {"project": "floor", "model_hash": "0" * 64},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--color-mode", required=True)
    args = parser.parse_args()
    image_format = ImageFormat(args.image_size, args.color_mode)

    async def image(request: Request):
        data = await request.body()
        return to_array(decode(data), image_format)

    app = FastAPI()

    @app.post("/predict")
    async def predict(x: Annotated[object, Depends(image)]) -> JSONResponse:
        return JSONResponse(ANSWER)

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
