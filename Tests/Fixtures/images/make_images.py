"""Writes the small images the image-stage tests read (run with Pillow; the outputs are committed).

rgb_4x3.png   4 wide, 3 high, pixel (x, y) = (10*x, 20*y, 5*(x+y)), lossless
red_16x8.jpg  16 wide, 8 high, solid (200, 30, 60), quality 95
gray_5x5.png  one channel, pixel (x, y) = 10*(x + 5*y)
red_16x8_truncated.jpg  the JPEG cut in half (a corrupt JPEG)
"""
from pathlib import Path
from PIL import Image

here = Path(__file__).parent
img = Image.new("RGB", (4, 3))
for y in range(3):
    for x in range(4):
        img.putpixel((x, y), (10 * x, 20 * y, 5 * (x + y)))
img.save(here / "rgb_4x3.png")
Image.new("RGB", (16, 8), (200, 30, 60)).save(here / "red_16x8.jpg", quality=95)
gray = Image.new("L", (5, 5))
for y in range(5):
    for x in range(5):
        gray.putpixel((x, y), 10 * (x + 5 * y))
gray.save(here / "gray_5x5.png")
data = (here / "red_16x8.jpg").read_bytes()
(here / "red_16x8_truncated.jpg").write_bytes(data[: len(data) // 2])
