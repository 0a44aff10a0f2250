// onair-camera: onaird's libcamera helper. One build per libcamera ABI (bookworm 0.0.3, trixie
// 0.4); onaird spawns /usr/libexec/onair/onair-camera-<abi> and never links libcamera itself,
// so a missing or different libcamera fails only this source.
//
//   onair-camera --list
//   onair-camera [--camera ID|INDEX] --size WxH --fps N [controls…]
//
// Streaming writes to stdout (or --fd N) a stream of packets, every one a 56-byte little-endian
// header followed by `payload_len` bytes:
//
//   0  magic "OLCC" (configured: sent once before the frames, no payload) or "OLCF" (frame)
//   4  header length (56)    8  width    12 height    16 DRM fourcc (YU12, NV12, RG24, BG24)
//   20 stride of plane 0, 1, 2 (tight: the picture is packed without line padding; 0 = no plane)
//   32 sequence (u64, libcamera's)   40 timestamp ns (u64, CLOCK_MONOTONIC, from the driver)
//   48 payload length (u32)   52 frames dropped so far (u32)
//
// A reader that is slower than the camera loses frames, never gets old ones: the newest
// completed frame waits in one slot, and a newer one replaces it. Exits 0 on SIGTERM/SIGINT,
// on EOF of stdin when stdin is a pipe (onaird's end), or when the reader goes away (EPIPE).
// Errors are one line on stderr, "onair-camera: …"; exit 2 for usage, 3 for no such camera,
// 4 for everything else libcamera refuses.
#include <libcamera/libcamera.h>
#include <libcamera/version.h>
#if LIBCAMERA_VERSION_MAJOR > 0 || LIBCAMERA_VERSION_MINOR >= 2
#include <libcamera/orientation.h>
#define ONAIR_HAS_ORIENTATION 1 // CameraConfiguration::orientation, controls::HdrMode (0.2+)
#endif

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace libcamera;

namespace {

std::atomic<bool> g_quit{false};
void on_signal(int) { g_quit = true; }

[[noreturn]] void die(int code, const std::string &msg)
{
	std::fprintf(stderr, "onair-camera: %s\n", msg.c_str());
	std::exit(code);
}

void note(const std::string &msg) { std::fprintf(stderr, "onair-camera: %s\n", msg.c_str()); }

// What the command line asked for. Controls are optional: unset ones are left to the camera.
struct Options {
	bool list = false;
	std::string camera;
	unsigned width = 640, height = 480, fps = 30;
	int out_fd = 1;
	int rotation = 0;
	bool hflip = false, vflip = false;
	std::string af_mode, awb_mode, hdr_mode, exposure; // exposure: "auto" or microseconds
	float lens_position = -1;
};

const char *kUsage =
	"usage: onair-camera --list\n"
	"       onair-camera [--camera ID|INDEX] --size WxH --fps N [--fd N]\n"
	"         [--rotation 0|180] [--hflip] [--vflip] [--af-mode manual|auto|continuous]\n"
	"         [--lens-position DIOPTRES] [--exposure auto|MICROSECONDS]\n"
	"         [--awb-mode auto|incandescent|tungsten|fluorescent|indoor|daylight|cloudy]\n"
	"         [--hdr-mode off|single|multi|night]\n";

Options parse(int argc, char **argv)
{
	Options o;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		auto value = [&]() -> std::string {
			if (i + 1 >= argc)
				die(2, a + " needs a value\n" + kUsage);
			return argv[++i];
		};
		if (a == "--list") o.list = true;
		else if (a == "--camera") o.camera = value();
		else if (a == "--size") {
			std::string v = value();
			if (std::sscanf(v.c_str(), "%ux%u", &o.width, &o.height) != 2 || !o.width || !o.height)
				die(2, "--size wants WIDTHxHEIGHT, got '" + v + "'");
		} else if (a == "--fps") o.fps = std::max(1, std::atoi(value().c_str()));
		else if (a == "--fd") o.out_fd = std::atoi(value().c_str());
		else if (a == "--rotation") o.rotation = std::atoi(value().c_str());
		else if (a == "--hflip") o.hflip = true;
		else if (a == "--vflip") o.vflip = true;
		else if (a == "--af-mode") o.af_mode = value();
		else if (a == "--lens-position") o.lens_position = std::strtof(value().c_str(), nullptr);
		else if (a == "--exposure") o.exposure = value();
		else if (a == "--awb-mode") o.awb_mode = value();
		else if (a == "--hdr-mode") o.hdr_mode = value();
		else if (a == "--help" || a == "-h") { std::fputs(kUsage, stdout); std::exit(0); }
		else die(2, "unknown option '" + a + "'\n" + kUsage);
	}
	return o;
}

// The camera named by id, or by index into the manager's list; "" is the first.
std::shared_ptr<Camera> pick(CameraManager &cm, const std::string &name)
{
	auto cams = cm.cameras();
	std::string all;
	for (size_t i = 0; i < cams.size(); i++)
		all += (i ? ", " : "") + std::to_string(i) + ": " + cams[i]->id();
	if (cams.empty())
		die(3, "no cameras found (is the driver loaded, and udev's database there?)");
	if (name.empty())
		return cams[0];
	if (auto c = cm.get(name))
		return c;
	char *end = nullptr;
	unsigned long idx = std::strtoul(name.c_str(), &end, 10);
	if (end && *end == '\0' && idx < cams.size())
		return cams[idx];
	die(3, "no camera '" + name + "'; cameras: " + all);
}

void list(CameraManager &cm)
{
	auto cams = cm.cameras();
	std::printf("libcamera %s, %zu camera(s)\n", CameraManager::version().c_str(), cams.size());
	for (size_t i = 0; i < cams.size(); i++) {
		auto &cam = cams[i];
		auto model = cam->properties().get(properties::Model);
		std::printf("camera %zu id=%s model=%s\n", i, cam->id().c_str(),
			    model ? model->c_str() : "?");
		auto cfg = cam->generateConfiguration({ StreamRole::VideoRecording });
		if (cfg && !cfg->empty()) {
			const StreamFormats &f = cfg->at(0).formats();
			for (const PixelFormat &pf : f.pixelformats()) {
				std::string sizes;
				for (const Size &s : f.sizes(pf))
					sizes += " " + s.toString();
				std::printf("  format %s range %s sizes%s\n", pf.toString().c_str(),
					    f.range(pf).toString().c_str(), sizes.c_str());
			}
		}
		for (const auto &[id, info] : cam->controls())
			std::printf("  control %s %s\n", id->name().c_str(), info.toString().c_str());
	}
}

// Plane layout of the formats we ask for: bytes per pixel of plane 0, and the chroma planes.
struct Layout {
	unsigned planes, bpp0;
	bool semi; // NV12: one interleaved chroma plane
};
bool layout_of(const PixelFormat &pf, Layout &l)
{
	if (pf == formats::YUV420) l = { 3, 1, false };
	else if (pf == formats::NV12) l = { 2, 1, true };
	else if (pf == formats::RGB888 || pf == formats::BGR888) l = { 1, 3, false };
	else return false;
	return true;
}

// One packet header (see the top of the file).
struct Header {
	char magic[4];
	uint32_t header_len, width, height, fourcc, stride[3];
	uint64_t sequence, timestamp_ns;
	uint32_t payload_len, dropped;
};
static_assert(sizeof(Header) == 56, "header layout");

bool write_all(int fd, const void *p, size_t n)
{
	const char *c = static_cast<const char *>(p);
	while (n) {
		ssize_t w = ::write(fd, c, n);
		if (w < 0 && errno == EINTR) {
			if (g_quit) return false;
			continue;
		}
		if (w <= 0) return false;
		c += w, n -= size_t(w);
	}
	return true;
}

// A mapped buffer: one mmap per dmabuf fd, and where every plane starts.
struct Mapped {
	std::vector<const uint8_t *> plane;
	std::vector<std::pair<void *, size_t>> maps;
};

class Streamer {
public:
	Streamer(std::shared_ptr<Camera> cam, const Options &o) : cam_(cam), opt_(o) {}
	int run();

private:
	void configure();
	ControlList controls();
	void completed(Request *r);
	void pack(const Request *r, std::vector<uint8_t> &out);

	std::shared_ptr<Camera> cam_;
	Options opt_;
	std::unique_ptr<CameraConfiguration> cfg_;
	Stream *stream_ = nullptr;
	Layout layout_{};
	std::unique_ptr<FrameBufferAllocator> alloc_;
	std::vector<std::unique_ptr<Request>> requests_;
	std::map<const FrameBuffer *, Mapped> mapped_;
	uint64_t interval_ns_ = 0, next_ns_ = 0;

	// The slot between libcamera's thread (completed) and the writer (run).
	std::mutex mu_;
	std::condition_variable cv_;
	std::vector<uint8_t> slot_;
	Header slot_hdr_{};
	bool slot_full_ = false;
	uint32_t dropped_ = 0;
};

void Streamer::configure()
{
	cfg_ = cam_->generateConfiguration({ StreamRole::VideoRecording });
	if (!cfg_ || cfg_->empty())
		die(4, "camera " + cam_->id() + " offers no video stream");
	StreamConfiguration &sc = cfg_->at(0);
	// First choice the encoder's own I420, then NV12 (Pi ISP, most SoCs), then packed RGB (vimc).
	PixelFormat want;
	for (PixelFormat pf : { formats::YUV420, formats::NV12, formats::RGB888, formats::BGR888 }) {
		for (const PixelFormat &have : sc.formats().pixelformats())
			if (have == pf && !want.isValid()) want = pf;
	}
	if (!want.isValid()) {
		std::string have;
		for (const PixelFormat &p : sc.formats().pixelformats()) have += " " + p.toString();
		die(4, "camera " + cam_->id() + " offers none of YUV420 NV12 RGB888 BGR888; it has" + have);
	}
	sc.pixelFormat = want;
	sc.size = Size(opt_.width, opt_.height);
	sc.bufferCount = std::max(sc.bufferCount, 4u);

	// Rotation and flips are a property of the whole configuration, not a control.
	bool ok = true;
	bool wanted_orientation = opt_.rotation || opt_.hflip || opt_.vflip;
#ifdef ONAIR_HAS_ORIENTATION
	Orientation o = orientationFromRotation(opt_.rotation, &ok);
	if (opt_.hflip) o = o * Transform::HFlip;
	if (opt_.vflip) o = o * Transform::VFlip;
	cfg_->orientation = o;
#else
	Transform t = transformFromRotation(opt_.rotation, &ok);
	if (opt_.hflip) t ^= Transform::HFlip;
	if (opt_.vflip) t ^= Transform::VFlip;
	cfg_->transform = t;
#endif
	if (!ok) die(2, "--rotation " + std::to_string(opt_.rotation) + ": 0, 90, 180 or 270");

	switch (cfg_->validate()) {
	case CameraConfiguration::Invalid:
		die(4, "camera " + cam_->id() + " rejects " + sc.toString());
	case CameraConfiguration::Adjusted:
		note("adjusted to " + sc.toString());
		break;
	default:
		break;
	}
#ifdef ONAIR_HAS_ORIENTATION
	if (wanted_orientation && cfg_->orientation != o)
		note("unsupported: rotation/flip (the camera can only do another orientation)");
#else
	if (wanted_orientation && cfg_->transform != t)
		note("unsupported: rotation/flip (the camera adjusted the transform to " +
		     std::string(transformToString(cfg_->transform)) + ")");
#endif
	if (!layout_of(sc.pixelFormat, layout_))
		die(4, "camera adjusted the format to " + sc.pixelFormat.toString() + ", which onair cannot take");
	if (cam_->configure(cfg_.get()) < 0)
		die(4, "camera " + cam_->id() + ": configure " + sc.toString() + " failed");
	stream_ = sc.stream();
}

// The start controls: what was asked for and the camera has; one stderr line per other one.
ControlList Streamer::controls()
{
	const ControlInfoMap &have = cam_->controls();
	ControlList c(have);
	auto has = [&](const ControlId &id, const std::string &opt) {
		if (have.count(&id)) return true;
		note("unsupported: " + opt + " (camera has no " + id.name() + " control)");
		return false;
	};
	int64_t d = int64_t(1000000 / opt_.fps);
	if (have.count(&controls::FrameDurationLimits)) {
		int64_t limits[2] = { d, d };
		c.set(controls::FrameDurationLimits, Span<const int64_t, 2>(limits));
	}
	// Enum names → values; an unknown name is a usage error.
	auto pick_enum = [](const std::string &opt, const std::string &v,
			    std::initializer_list<std::pair<const char *, int>> names) {
		for (auto &[n, val] : names)
			if (v == n) return val;
		die(2, opt + ": unknown value '" + v + "'");
	};
	if (!opt_.af_mode.empty()) {
		int v = pick_enum("--af-mode", opt_.af_mode, { { "manual", controls::AfModeManual },
			{ "auto", controls::AfModeAuto }, { "continuous", controls::AfModeContinuous } });
		if (has(controls::AfMode, "--af-mode")) c.set(controls::AfMode, v);
	}
	if (opt_.lens_position >= 0 && has(controls::LensPosition, "--lens-position")) {
		if (have.count(&controls::AfMode) && opt_.af_mode.empty())
			c.set(controls::AfMode, controls::AfModeManual);
		c.set(controls::LensPosition, opt_.lens_position);
	}
	if (opt_.exposure == "auto") {
		if (has(controls::AeEnable, "--exposure auto")) c.set(controls::AeEnable, true);
	} else if (!opt_.exposure.empty()) {
		if (has(controls::ExposureTime, "--exposure")) {
			if (have.count(&controls::AeEnable)) c.set(controls::AeEnable, false);
			c.set(controls::ExposureTime, int32_t(std::atoi(opt_.exposure.c_str())));
		}
	}
	if (!opt_.awb_mode.empty()) {
		int v = pick_enum("--awb-mode", opt_.awb_mode, { { "auto", controls::AwbAuto },
			{ "incandescent", controls::AwbIncandescent }, { "tungsten", controls::AwbTungsten },
			{ "fluorescent", controls::AwbFluorescent }, { "indoor", controls::AwbIndoor },
			{ "daylight", controls::AwbDaylight }, { "cloudy", controls::AwbCloudy } });
		if (has(controls::AwbMode, "--awb-mode")) {
			if (have.count(&controls::AwbEnable)) c.set(controls::AwbEnable, true);
			c.set(controls::AwbMode, v);
		}
	}
	if (!opt_.hdr_mode.empty()) {
#ifdef ONAIR_HAS_ORIENTATION
		int v = pick_enum("--hdr-mode", opt_.hdr_mode, { { "off", controls::HdrModeOff },
			{ "single", controls::HdrModeSingleExposure },
			{ "multi", controls::HdrModeMultiExposure }, { "night", controls::HdrModeNight } });
		if (has(controls::HdrMode, "--hdr-mode")) c.set(controls::HdrMode, v);
#else
		note("unsupported: --hdr-mode (libcamera before 0.2 has no HdrMode control)");
#endif
	}
	return c;
}

// Copies the picture out of the dmabuf(s) without line padding.
void Streamer::pack(const Request *r, std::vector<uint8_t> &out)
{
	const StreamConfiguration &sc = cfg_->at(0);
	const Mapped &m = mapped_.at(r->buffers().at(stream_));
	unsigned w = sc.size.width, h = sc.size.height, stride = sc.stride;
	size_t row0 = size_t(w) * layout_.bpp0;
	size_t cw = layout_.semi ? w : w / 2, cstride = layout_.semi ? stride : stride / 2;
	out.resize(row0 * h + (layout_.planes - 1) * cw * (h / 2));
	uint8_t *dst = out.data();
	for (unsigned y = 0; y < h; y++, dst += row0)
		std::memcpy(dst, m.plane[0] + size_t(y) * stride, row0);
	for (unsigned p = 1; p < layout_.planes; p++)
		for (unsigned y = 0; y < h / 2; y++, dst += cw)
			std::memcpy(dst, m.plane[p] + size_t(y) * cstride, cw);
}

// libcamera's thread: keep the frame if it is due, then give the buffer straight back.
void Streamer::completed(Request *r)
{
	if (r->status() == Request::RequestCancelled || g_quit)
		return;
	const FrameBuffer *fb = r->buffers().at(stream_);
	const FrameMetadata &md = fb->metadata();
	bool due = md.status == FrameMetadata::FrameSuccess && md.timestamp + interval_ns_ / 4 >= next_ns_;
	if (due) {
		next_ns_ = md.timestamp > next_ns_ + interval_ns_ ? md.timestamp + interval_ns_
								   : next_ns_ + interval_ns_;
		std::lock_guard<std::mutex> lock(mu_);
		if (slot_full_) dropped_++; // the reader is behind: the older frame goes
		pack(r, slot_);
		const StreamConfiguration &sc = cfg_->at(0);
		unsigned w = sc.size.width;
		uint32_t cs = layout_.semi ? w : w / 2;
		slot_hdr_ = Header{ { 'O', 'L', 'C', 'F' }, 56, w, sc.size.height, sc.pixelFormat.fourcc(),
			{ w * layout_.bpp0, layout_.planes > 1 ? cs : 0, layout_.planes > 2 ? cs : 0 },
			md.sequence, md.timestamp, uint32_t(slot_.size()), dropped_ };
		slot_full_ = true;
		cv_.notify_one();
	}
	r->reuse(Request::ReuseBuffers);
	cam_->queueRequest(r);
}

int Streamer::run()
{
	if (cam_->acquire() < 0)
		die(4, "camera " + cam_->id() + " is busy (another program has it)");
	configure();
	const StreamConfiguration &sc = cfg_->at(0);
	interval_ns_ = 1000000000ull / opt_.fps;
	alloc_ = std::make_unique<FrameBufferAllocator>(cam_);
	if (alloc_->allocate(stream_) < 0)
		die(4, "cannot allocate buffers for " + sc.toString());
	for (const auto &fb : alloc_->buffers(stream_)) {
		// Planes usually share one dmabuf: map each fd once, as far as its planes reach.
		Mapped m;
		std::map<int, size_t> reach;
		for (const FrameBuffer::Plane &p : fb->planes())
			reach[p.fd.get()] = std::max<size_t>(reach[p.fd.get()], p.offset + p.length);
		std::map<int, uint8_t *> base;
		for (auto &[fd, len] : reach) {
			void *a = mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
			if (a == MAP_FAILED) die(4, std::string("mmap: ") + std::strerror(errno));
			m.maps.emplace_back(a, len);
			base[fd] = static_cast<uint8_t *>(a);
		}
		const auto &pl = fb->planes();
		for (unsigned p = 0; p < layout_.planes; p++) {
			if (p < pl.size()) {
				m.plane.push_back(base[pl[p].fd.get()] + pl[p].offset);
			} else { // one plane holding all three: they follow each other
				size_t prev = p == 1 ? size_t(sc.stride) * sc.size.height
						     : size_t(sc.stride / 2) * (sc.size.height / 2);
				m.plane.push_back(m.plane.back() + prev);
			}
		}
		mapped_[fb.get()] = std::move(m);
		std::unique_ptr<Request> r = cam_->createRequest();
		if (!r || r->addBuffer(stream_, fb.get()) < 0)
			die(4, "cannot create a request");
		requests_.push_back(std::move(r));
	}
	cam_->requestCompleted.connect(this, &Streamer::completed);
	ControlList ctrls = controls();
	if (cam_->start(&ctrls) < 0)
		die(4, "camera " + cam_->id() + ": start failed");

	// Tell the reader what comes before the first frame.
	unsigned w = sc.size.width;
	uint32_t cs = layout_.semi ? w : w / 2;
	Header cfg{ { 'O', 'L', 'C', 'C' }, 56, w, sc.size.height, sc.pixelFormat.fourcc(),
		{ w * layout_.bpp0, layout_.planes > 1 ? cs : 0, layout_.planes > 2 ? cs : 0 }, 0, 0, 0, 0 };
	note("streaming " + cam_->id() + " " + sc.toString() + " stride " + std::to_string(sc.stride) +
	     " at " + std::to_string(opt_.fps) + " fps (libcamera " + CameraManager::version() + ")");
	bool ok = write_all(opt_.out_fd, &cfg, sizeof cfg);
	for (auto &r : requests_)
		cam_->queueRequest(r.get());

	// The writer: whatever is in the slot, out; blocking here is what makes frames drop.
	std::vector<uint8_t> out;
	Header hdr{};
	while (ok && !g_quit) {
		{
			std::unique_lock<std::mutex> lock(mu_);
			if (!cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return slot_full_; }))
				continue;
			std::swap(out, slot_);
			hdr = slot_hdr_;
			slot_full_ = false;
		}
		ok = write_all(opt_.out_fd, &hdr, sizeof hdr) && write_all(opt_.out_fd, out.data(), out.size());
	}
	g_quit = true;
	cam_->stop();
	cam_->requestCompleted.disconnect(this);
	requests_.clear();
	for (auto &[fb, m] : mapped_)
		for (auto &[a, len] : m.maps) munmap(a, len);
	alloc_.reset();
	cam_->release();
	if (!ok && !g_quit) note("output closed");
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	Options opt = parse(argc, argv);
	std::signal(SIGPIPE, SIG_IGN); // a closed reader is EPIPE, handled as a clean exit
	struct sigaction sa {};
	sa.sa_handler = on_signal; // no SA_RESTART: a blocked write returns EINTR
	sigaction(SIGTERM, &sa, nullptr);
	sigaction(SIGINT, &sa, nullptr);
	prctl(PR_SET_PDEATHSIG, SIGTERM); // onaird gone (even by SIGKILL): stop too

	// stdin a pipe: onaird holds the other end, and its EOF means stop.
	struct stat st {};
	if (!opt.list && fstat(0, &st) == 0 && S_ISFIFO(st.st_mode))
		std::thread([] {
			char b[64];
			while (::read(0, b, sizeof b) > 0) {}
			g_quit = true;
		}).detach();

	auto cm = std::make_unique<CameraManager>();
	if (int err = cm->start(); err < 0)
		die(4, std::string("libcamera: camera manager failed to start: ") + std::strerror(-err));
	int rc = 0;
	if (opt.list) {
		list(*cm);
	} else {
		std::shared_ptr<Camera> cam = pick(*cm, opt.camera);
		rc = Streamer(cam, opt).run();
		cam.reset();
	}
	cm->stop();
	return rc;
}
