"""Reads the machine-readable stamp of onair's test pattern off a decoded picture.

An independent reader of the layout documented in hal/src/synthetic/stamp.rs (3 rows of 36
square cells at the bottom of the picture: sync cells, a 32-bit frame number, the low 48 bits
of the Unix wall clock in milliseconds at capture, a CRC-16/CCITT-FALSE), for the Python test
clients. A picture scaled from the source (a lower quality layer) is read with the layout of
the source's size, scaled. Each cell's value is the mean of a 4x4 grid of samples inside its
centre square (the spec's centre square, sampled: pure Python has to keep up with 30 pictures
a second).
"""

ROWS, COLUMNS, BITS = 3, 36, 96
SYNC = [(0, True), (1, False), (34, False), (35, True)]
THRESHOLD = 128
WALLCLOCK_BITS = 48


def _bars_height(height):
    bars = 2 * height // 3
    return bars // 16 * 16 if bars >= 16 else bars // 2 * 2


def layout(width, height):
    """(block, left, top) of the stamp drawn on a width x height picture, or None."""
    m = min(width // COLUMNS, 2 * (height - _bars_height(height)) // 7)
    if m >= 16:
        block = m // 16 * 16
    elif m >= 2:
        block = m // 2 * 2
    else:
        return None
    align = 16 if block % 16 == 0 else 2
    left = (width - COLUMNS * block) // 2 // align * align
    top = (height - 3 * block - block // 2) // align * align
    return block, left, top


def crc16(data):
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def read(luma, stride, width, height, source=None):
    """(sequence, wallclock_ms) from a luma plane (a bytes-like object, lines `stride` apart)
    of a width x height picture drawn at `source` (width, height; default the same), or None
    when there is no readable stamp."""
    source_w, source_h = source or (width, height)
    found = layout(source_w, source_h)
    if not found or len(luma) < (height - 1) * stride + width:
        return None
    block, left, top = found
    inner = max(block // 2, 1)

    def white(row, column):
        x0 = left + column * block + block // 4
        y0 = top + row * block + block // 4
        total = count = 0
        for j in range(4):
            y = (y0 + inner * j // 4) * height // source_h
            for i in range(4):
                x = (x0 + inner * i // 4) * width // source_w
                if x < width and y < height:
                    total += luma[y * stride + x]
                    count += 1
        return count > 0 and total >= THRESHOLD * count

    for row in range(ROWS):
        if any(white(row, column) != want for column, want in SYNC):
            return None
    payload = 0
    for bit in range(BITS):
        row, column = divmod(bit, 32)
        payload = (payload << 1) | int(white(row, column + 2))
    sequence = payload >> 64
    wallclock = (payload >> 16) & ((1 << WALLCLOCK_BITS) - 1)
    crc = payload & 0xFFFF
    if crc16(sequence.to_bytes(4, "big") + wallclock.to_bytes(6, "big")) != crc:
        return None
    return sequence, wallclock


def latency_ms(wallclock, now_ms):
    """now_ms (Unix ms) minus a stamp's wall clock (its low 48 bits)."""
    mask = (1 << WALLCLOCK_BITS) - 1
    return ((int(now_ms) & mask) - wallclock) % (1 << WALLCLOCK_BITS)
