"""`lrcn serve`: a captioning checkpoint behind a small web page and a JSON endpoint.

A person opens the page, drops or picks images (or videos, for a video model) and sees each
caption, with the beam size as a control and, for attention models, the per-word maps; scripts
``POST /caption`` (see `lrcn.serve.app`). Concurrent requests are gathered into one batched
decode (`lrcn.serve.batching`), the model runs in one worker thread, and every bad upload is a 4xx
answer of one sentence (`lrcn.serve.uploads`). It listens on 127.0.0.1 unless told otherwise.

Starlette, uvicorn and python-multipart are the optional extra ``lrcn[serve]``; they are imported
only when the server starts (`lrcn.serve.command`), so the rest of lrcn never needs them.
"""
