"""The campaign page's web app (FastAPI): JSON API, live events, static page, section images.

Routes:

* ``GET /``: the page (``static/index.html``; plotly.js is served from the installed
  ``plotly`` package, so the page works without internet);
* ``GET /api/state``: campaign state, trials, recommendation, figures (:class:`CampaignView`);
* ``GET /api/effects``: GP slices through the recommendation (slower; fetched apart);
* ``GET /api/trials/{id}``: one trial's sections (LM/EM image URLs, scores) and feedback;
* ``GET /api/events``: server-sent events, one ``change`` whenever the journal changes;
* ``GET /files/images/...``: the section images the executor kept in the campaign directory;
* ``POST /api/feedback`` ``{trial, rating, note?, section?}``: rate a trial (or one of its
  sections: the note says which) -- :meth:`Campaign.feedback`;
* ``POST /api/inject`` ``{params}``: queue a protocol; parameters left out are taken from
  the recommended protocol -- :meth:`Campaign.inject`;
* ``POST /api/pause`` ``{paused: bool}``: :meth:`Campaign.pause` / :meth:`Campaign.unpause`.

Writes go through :class:`~cryoopt.campaign.Campaign`, as the CLI's do: the same
validation, the same journal rows, and a campaign running in another process sees them
at its next step. Errors come back as HTTP 400 with the library's message.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

from cryoopt.campaign import Campaign
from cryoopt.exceptions import CryoOptError
from cryoopt.ui.views import CampaignView

__all__ = ["create_app", "serve"]

STATIC = Path(__file__).parent / "static"


class FeedbackIn(BaseModel):
    trial: int
    rating: int = Field(ge=1, le=5)
    note: str | None = None
    section: int | None = Field(default=None, ge=1)
    author: str | None = None


class InjectIn(BaseModel):
    params: dict[str, Any]


class PauseIn(BaseModel):
    paused: bool


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(directory: str | Path, *, poll_s: float = 0.5) -> FastAPI:
    """The app for the campaign in ``directory`` (``poll_s``: how often live events check the journal)."""
    directory = Path(directory)
    view = CampaignView(directory)
    app = FastAPI(title=f"cryoopt: {view.config.name}", docs_url="/api/docs", redoc_url=None)

    def campaign() -> Campaign:
        return Campaign.open(directory, progress=False)

    def bad(err: Exception) -> HTTPException:
        return HTTPException(status_code=400, detail=str(err))

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/static/plotly.min.js")
    def plotly_js() -> FileResponse:
        return FileResponse(_plotly_js(), media_type="text/javascript")

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        path = (STATIC / name).resolve()
        if path.parent != STATIC.resolve() or not path.is_file():
            raise HTTPException(404, f"no static file {name}")
        return FileResponse(path)

    @app.get("/files/{path:path}")
    def files(path: str) -> FileResponse:
        root = directory.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root / "images") or not target.is_file():
            raise HTTPException(404, f"no image {path}")
        return FileResponse(target, media_type="image/png")

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return view.state()

    @app.get("/api/effects")
    def effects() -> dict[str, Any]:
        return {"figure": view.effects()}

    @app.get("/api/trials/{trial_id}")
    def trial(trial_id: int) -> dict[str, Any]:
        out = view.trial(trial_id)
        if out is None:
            raise HTTPException(404, f"unknown trial {trial_id}")
        return out

    @app.get("/api/events")
    async def events() -> StreamingResponse:
        async def stream() -> Any:
            last = None
            yield "retry: 2000\n\n"
            while True:
                version = await asyncio.to_thread(view.version)
                if version != last:
                    last = version
                    yield f"event: change\ndata: {version}\n\n"
                await asyncio.sleep(poll_s)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/api/feedback")
    def feedback(body: FeedbackIn) -> dict[str, Any]:
        note = body.note.strip() if body.note else ""
        if body.section is not None:
            note = f"[section {body.section}] {note}".strip()
        try:
            fid = campaign().feedback(body.trial, body.rating, note or None,
                                      author=body.author or os.environ.get("USER") or "cryoopt serve")
        except CryoOptError as err:
            raise bad(err) from None
        return {"feedback": fid, "trial": body.trial, "rating": body.rating, "note": note}

    @app.post("/api/inject")
    def inject(body: InjectIn) -> dict[str, Any]:
        given = {k: v for k, v in body.params.items() if v not in (None, "")}
        rec = view.state()["recommendation"]
        missing = [p["name"] for p in view.parameters() if p["name"] not in given]
        if missing and rec is None:
            raise bad(ValueError(f"no recommendation yet to fill {missing} from; give every parameter"))
        params = {**({k: rec["params"][k] for k in missing} if missing else {}), **given}
        try:
            rid = campaign().inject(params)
        except CryoOptError as err:
            raise bad(err) from None
        return {"request": rid, "params": params, "filled_from_recommendation": missing}

    @app.post("/api/pause")
    def pause(body: PauseIn) -> dict[str, Any]:
        c = campaign()
        (c.pause if body.paused else c.unpause)()
        return {"paused": body.paused}

    return app


def serve(directory: str | Path, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the campaign page for ``directory`` until Ctrl-C (``cryoopt serve``)."""
    import uvicorn

    print(f"cryoopt: campaign page of {directory} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(create_app(directory), host=host, port=port, log_level="warning")
