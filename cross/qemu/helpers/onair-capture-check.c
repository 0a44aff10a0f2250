/*
 * onair-capture-check: captures from an ALSA device for a while and reports level and frequency,
 * to show the snd-aloop capture side (onaird's audio.source) carries onair-tone's tone.
 *
 *   onair-capture-check [DEVICE [SECONDS [RATE [CHANNELS]]]]   defaults: hw:Loopback,1,0 1 48000 1
 *
 * Prints e.g. "hw:Loopback,1,0: 48000 frames, rms 11585, peak 16383, ~440 Hz".
 */
#include <alsa/asoundlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	const char *dev = argc > 1 ? argv[1] : "hw:Loopback,1,0";
	double seconds = argc > 2 ? atof(argv[2]) : 1.0;
	unsigned rate = argc > 3 ? (unsigned)atoi(argv[3]) : 48000;
	unsigned channels = argc > 4 ? (unsigned)atoi(argv[4]) : 1;
	static short buf[960 * 8];
	snd_pcm_t *pcm;
	long total = 0, want = (long)(seconds * rate), crossings = 0;
	double sum = 0;
	int peak = 0, err;
	short last = 0;

	if (channels < 1 || channels > 8)
		return 2;
	if ((err = snd_pcm_open(&pcm, dev, SND_PCM_STREAM_CAPTURE, 0)) < 0 ||
	    (err = snd_pcm_set_params(pcm, SND_PCM_FORMAT_S16_LE, SND_PCM_ACCESS_RW_INTERLEAVED,
				      channels, rate, 0, 100000)) < 0) {
		fprintf(stderr, "onair-capture-check: %s: %s\n", dev, snd_strerror(err));
		return 1;
	}
	/* snd_pcm_set_params() leaves start_threshold at the buffer size: reads of one period would
	 * never start the stream (the kernel then fails them with EIO), so start it here. */
	if ((err = snd_pcm_start(pcm)) < 0) {
		fprintf(stderr, "onair-capture-check: start %s: %s\n", dev, snd_strerror(err));
		return 1;
	}
	while (total < want) {
		snd_pcm_sframes_t n = snd_pcm_readi(pcm, buf, 960);
		if (n < 0) {
			snd_pcm_state_t st = snd_pcm_state(pcm);
			snd_pcm_sframes_t r = snd_pcm_recover(pcm, (int)n, 1);
			if (r < 0) {
				snd_output_t *out;
				fprintf(stderr, "onair-capture-check: read after %ld frames: %s (state %s)\n",
					total, snd_strerror((int)n), snd_pcm_state_name(st));
				if (snd_output_stdio_attach(&out, stderr, 0) == 0)
					snd_pcm_dump(pcm, out);
				return 1;
			}
			n = 0;
		}
		for (long i = 0; i < n; i++) {
			short s = buf[i * channels];
			sum += (double)s * s;
			if (abs(s) > peak)
				peak = abs(s);
			if ((last < 0 && s >= 0))
				crossings++;
			last = s;
		}
		total += n;
	}
	printf("%s: %ld frames, rms %.0f, peak %d, ~%.0f Hz\n", dev, total, sqrt(sum / total), peak,
	       crossings * (double)rate / total);
	return 0;
}
