/*
 * onair-v4l2-info: what a V4L2 capture device offers, and a short capture, to show vivid works
 * the way onaird's config asks (default 640x480 YUYV at 15 fps).
 *
 *   onair-v4l2-info [DEVICE [WIDTH HEIGHT [FPS [FRAMES]]]]   defaults: /dev/video0 640 480 15 30
 *
 * Lists formats, frame sizes and, for WIDTH x HEIGHT, the frame intervals; then sets YUYV
 * WIDTH x HEIGHT at FPS, captures FRAMES frames with mmap streaming and prints the measured rate.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;
	do
		r = ioctl(fd, req, arg);
	while (r < 0 && errno == EINTR);
	return r;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static const char *fourcc(unsigned f)
{
	static char s[5];
	for (int i = 0; i < 4; i++)
		s[i] = (char)((f >> (8 * i)) & 0xff);
	return s;
}

int main(int argc, char **argv)
{
	const char *dev = argc > 1 ? argv[1] : "/dev/video0";
	unsigned w = argc > 3 ? (unsigned)atoi(argv[2]) : 640, h = argc > 3 ? (unsigned)atoi(argv[3]) : 480;
	unsigned fps = argc > 4 ? (unsigned)atoi(argv[4]) : 15, frames = argc > 5 ? (unsigned)atoi(argv[5]) : 30;
	struct v4l2_capability cap = {0};
	int fd = open(dev, O_RDWR);

	if (fd < 0 || xioctl(fd, VIDIOC_QUERYCAP, &cap) < 0) {
		perror(dev);
		return 1;
	}
	printf("%s: driver %s, card %s, caps 0x%08x\n", dev, cap.driver, cap.card, cap.device_caps);
	printf("formats:");
	for (struct v4l2_fmtdesc f = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE}; xioctl(fd, VIDIOC_ENUM_FMT, &f) == 0; f.index++)
		printf(" %s", fourcc(f.pixelformat));
	printf("\nYUYV sizes:");
	for (struct v4l2_frmsizeenum s = {.pixel_format = V4L2_PIX_FMT_YUYV}; xioctl(fd, VIDIOC_ENUM_FRAMESIZES, &s) == 0; s.index++)
		if (s.type == V4L2_FRMSIZE_TYPE_DISCRETE)
			printf(" %ux%u", s.discrete.width, s.discrete.height);
	printf("\nYUYV %ux%u intervals:", w, h);
	for (struct v4l2_frmivalenum i = {.pixel_format = V4L2_PIX_FMT_YUYV, .width = w, .height = h};
	     xioctl(fd, VIDIOC_ENUM_FRAMEINTERVALS, &i) == 0; i.index++)
		if (i.type == V4L2_FRMIVAL_TYPE_DISCRETE)
			printf(" %u/%u", i.discrete.numerator, i.discrete.denominator);
	printf("\n");

	struct v4l2_format fmt = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
	fmt.fmt.pix.width = w;
	fmt.fmt.pix.height = h;
	fmt.fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
	fmt.fmt.pix.field = V4L2_FIELD_NONE;
	if (xioctl(fd, VIDIOC_S_FMT, &fmt) < 0) {
		perror("VIDIOC_S_FMT");
		return 1;
	}
	struct v4l2_streamparm parm = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
	parm.parm.capture.timeperframe.numerator = 1;
	parm.parm.capture.timeperframe.denominator = fps;
	if (xioctl(fd, VIDIOC_S_PARM, &parm) < 0)
		perror("VIDIOC_S_PARM");
	printf("set: %ux%u %s, %u bytes/frame, %u/%u s per frame\n", fmt.fmt.pix.width, fmt.fmt.pix.height,
	       fourcc(fmt.fmt.pix.pixelformat), fmt.fmt.pix.sizeimage,
	       parm.parm.capture.timeperframe.numerator, parm.parm.capture.timeperframe.denominator);

	struct v4l2_requestbuffers req = {.count = 4, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
	if (xioctl(fd, VIDIOC_REQBUFS, &req) < 0) {
		perror("VIDIOC_REQBUFS");
		return 1;
	}
	void *mem[8];
	for (unsigned i = 0; i < req.count && i < 8; i++) {
		struct v4l2_buffer b = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP, .index = i};
		xioctl(fd, VIDIOC_QUERYBUF, &b);
		mem[i] = mmap(NULL, b.length, PROT_READ, MAP_SHARED, fd, b.m.offset);
		xioctl(fd, VIDIOC_QBUF, &b);
	}
	enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	if (xioctl(fd, VIDIOC_STREAMON, &type) < 0) {
		perror("VIDIOC_STREAMON");
		return 1;
	}
	double t0 = 0;
	unsigned nonzero = 0, bytes = 0;
	for (unsigned n = 0; n < frames; n++) {
		struct v4l2_buffer b = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
		if (xioctl(fd, VIDIOC_DQBUF, &b) < 0) {
			perror("VIDIOC_DQBUF");
			return 1;
		}
		if (n == 0)
			t0 = now();
		bytes = b.bytesused;
		const unsigned char *p = mem[b.index];
		nonzero = 0;
		for (unsigned i = 0; i < b.bytesused; i += 997)
			nonzero += p[i] != 0;
		xioctl(fd, VIDIOC_QBUF, &b);
	}
	double dt = now() - t0;
	xioctl(fd, VIDIOC_STREAMOFF, &type);
	printf("captured %u frames of %u bytes at %.1f fps (%u of %u sampled bytes non-zero)\n", frames, bytes,
	       frames > 1 ? (frames - 1) / dt : 0.0, nonzero, bytes / 997 + 1);
	return 0;
}
