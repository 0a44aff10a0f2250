/*
 * onair-tone: plays a sine tone to an ALSA playback device, forever.
 * In the QEMU harness it feeds the snd-aloop playback side (hw:Loopback,0,0) so that the
 * capture side (hw:Loopback,1,0, onaird's audio.source) carries a 440 Hz tone.
 *
 *   onair-tone [DEVICE [FREQ_HZ [RATE [CHANNELS]]]]   defaults: hw:Loopback,0,0 440 48000 1
 *
 * snd-aloop makes the capture side use the playback side's rate/format/channels while both
 * run, so RATE/CHANNELS must be what the capturer asks for (or it must use plughw:).
 */
#include <alsa/asoundlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	const char *dev = argc > 1 ? argv[1] : "hw:Loopback,0,0";
	double freq = argc > 2 ? atof(argv[2]) : 440.0;
	unsigned rate = argc > 3 ? (unsigned)atoi(argv[3]) : 48000;
	unsigned channels = argc > 4 ? (unsigned)atoi(argv[4]) : 1;
	enum { PERIOD = 960 }; /* 20 ms at 48 kHz */
	static short buf[PERIOD * 8];
	snd_pcm_t *pcm;
	double phase = 0, step;
	int err;

	if (channels < 1 || channels > 8 || rate < 8000) {
		fprintf(stderr, "onair-tone: bad rate/channels\n");
		return 2;
	}
	if ((err = snd_pcm_open(&pcm, dev, SND_PCM_STREAM_PLAYBACK, 0)) < 0) {
		fprintf(stderr, "onair-tone: open %s: %s\n", dev, snd_strerror(err));
		return 1;
	}
	if ((err = snd_pcm_set_params(pcm, SND_PCM_FORMAT_S16_LE, SND_PCM_ACCESS_RW_INTERLEAVED,
				      channels, rate, 0, 100000)) < 0) {
		fprintf(stderr, "onair-tone: %s: %u Hz, %u ch, S16_LE: %s\n", dev, rate, channels,
			snd_strerror(err));
		return 1;
	}
	fprintf(stderr, "onair-tone: %.1f Hz to %s (%u Hz, %u ch, S16_LE)\n", freq, dev, rate,
		channels);
	step = 2 * M_PI * freq / rate;
	for (;;) {
		for (unsigned i = 0; i < PERIOD; i++) {
			short s = (short)(0.5 * 32767 * sin(phase));
			phase += step;
			if (phase > 2 * M_PI)
				phase -= 2 * M_PI;
			for (unsigned c = 0; c < channels; c++)
				buf[i * channels + c] = s;
		}
		snd_pcm_sframes_t n = snd_pcm_writei(pcm, buf, PERIOD);
		if (n < 0 && (n = snd_pcm_recover(pcm, (int)n, 1)) < 0) {
			fprintf(stderr, "onair-tone: write: %s\n", snd_strerror((int)n));
			return 1;
		}
	}
}
