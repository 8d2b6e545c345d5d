"""The data engine's annotation tool: a browser page backed by SAM, writing SA-1B JSON (stages 1 and 2 of SA-1B).

    python -m samjax.annotate --images photos/ --checkpoint ckpt/sam_vit_b --out labels/ [--prefill]

Open the printed URL. Left-click adds a foreground point, right-click (or Shift+click) a background point, a drag
draws a box; the mask follows each click (decoded on the server from the image's cached embedding, or in the
browser with --browser-decode). Pick one of the three candidates (1 / 2 / 3), accept it (Enter). Every accept
writes labels/<name>.json (SA-1B: COCO RLE, bbox, area, predicted_iou, point_coords, stability_score, crop_box,
plus who or what made each mask) and labels/<name>.jpg atomically. With --prefill the automatic mask generator's
confident masks are there when an image opens, marked as the model's: delete or edit what is wrong, add what it
missed. Then

    python -m samjax.data.sa1b --input labels/ --output labels_tfrecord/ --num-shards 1
    python -m samjax.train --experiment=finetune --workdir=ft --config.init.path=ckpt/sam_vit_b \\
        --config.data.train_files='labels_tfrecord/*.tfrecord'

and annotate the next round with --checkpoint ft/model.

Keys: Enter/A accept, 1/2/3 candidate, Z undo, Esc/C clear the prompt, Delete/X delete the selected mask, E edit
it (its prompt becomes the current one; accepting replaces it), Ctrl+click select the mask under the cursor, N/P
(or arrows) next/previous image, D mark the image done, O overlay on/off, F fit, 0 actual size, +/- or the wheel
zoom, Space+drag or the middle button pan, ? help.

Several people may annotate at once (one server, any number of pages): writes carry the version they saw, and the
page warns when someone else changed an image meanwhile; no write is lost (samjax.annotate.app). The server binds
to 127.0.0.1; with --host 0.0.0.0 (reachable from other machines) it requires --token, or makes one and prints
the URL with it.

Package layout: storage.py (images, SA-1B documents, atomic writes), engine.py (Predictor, embedding cache,
background prefetch, automatic masks), app.py (HTTP API), server.py (assembly, command line), static/ (the page:
plain HTML/JS/CSS, no build step, nothing fetched from elsewhere), screenshots.py (the README's pictures).
"""
