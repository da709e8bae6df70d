"""Writing a benchmark's or the demo's results: <name>.md, <name>.json, <name>.png."""
import json
import logging
import os


def save_results(out_dir, name, markdown, rows, chart=None):
    """Prints the Markdown table and writes it, the rows (JSON) and, given a
    chart(rows, path) function, a PNG into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    print(markdown)
    with open(os.path.join(out_dir, name + '.md'), 'w') as f:
        f.write(markdown + '\n')
    with open(os.path.join(out_dir, name + '.json'), 'w') as f:
        json.dump(rows, f, indent=1)
    if chart is not None:
        chart(rows, os.path.join(out_dir, name + '.png'))
    logging.getLogger(name).info('wrote %s/%s.{md,json%s}', out_dir, name,
                                 ',png' if chart else '')
