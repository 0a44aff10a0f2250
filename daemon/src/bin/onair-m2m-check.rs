//! `onair-m2m-check`: drives onaird's V4L2 memory-to-memory encoder on real drivers (the QEMU
//! guest's vivid and vicodec; see `cross/qemu/m2m-test`) and checks what comes out.
//!
//! vivid's pictures (640x480, through the HAL and `media::convert`) are encoded to FWHT by
//! [`M2mEncoder`] on vicodec's encoder, with a forced key frame, a GOP and a bitrate changed
//! while encoding; vicodec's stateful decoder (v4l2r's decoder module) decodes the stream
//! back, and the decoded pictures must be 640x480 and show vivid's 75 % colour bars. Then
//! onair's own test pattern goes the same way, and the stamp read from every decoded picture
//! must be the number of the picture that went in. Prints a summary line and exits 0 only when
//! every check passed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use onair_hal::synthetic::{BARS, TestPattern, bar_probe_points, read_stamp, rgb_to_yuv};
use onair_hal::v4l2::V4l2Camera;
use onair_hal::{VideoFormatRequest, VideoFrame, VideoSource};
use onaird::media::convert;
use onaird::media::encoder::Encoder as _;
use onaird::media::m2m::{self, Coded, Input, M2mEncoder, M2mSettings};
use v4l2r::decoder::stateful::Decoder;
use v4l2r::decoder::{DecoderEvent, FormatChangedReply};
use v4l2r::device::queue::FormatBuilder;
use v4l2r::device::queue::handles_provider::MmapProvider;
use v4l2r::device::{Device, DeviceConfig};
use v4l2r::ioctl::{BufferFlags, FormatFlags, FormatIterator};
use v4l2r::memory::{MemoryType, MmapHandle};
use v4l2r::{Format, PixelFormat, PlaneLayout, QueueType, Rect};

/// Largest difference per Y/Cb/Cr component from the bars' BT.601 values (FWHT is lossy,
/// vivid's bars are not exactly the test pattern's).
const BAR_TOLERANCE: u8 = 24;

#[derive(Parser, Debug)]
#[command(about = "Checks the V4L2 memory-to-memory encoder on vivid and vicodec")]
struct Args {
    /// The camera.
    #[arg(long, default_value = "/dev/video0")]
    camera: String,
    /// Pictures to encode.
    #[arg(long, default_value_t = 30)]
    pictures: usize,
    /// The picture forced to be a key frame.
    #[arg(long, default_value_t = 7)]
    force_at: usize,
    /// The picture before which the GOP and the bitrate change.
    #[arg(long, default_value_t = 12)]
    change_at: usize,
    /// The GOP at the start, and from `--change-at` on.
    #[arg(long, default_value_t = 10)]
    gop: u32,
    #[arg(long, default_value_t = 3)]
    new_gop: u32,
    /// Only encode (v4l2r's decoder takes only multi-planar devices: for vicodec loaded
    /// without `multiplanar=1`).
    #[arg(long)]
    encode_only: bool,
    /// The camera shares its buffers (VIDIOC_EXPBUF) and the encoder reads them where they
    /// are (DMABUF import): no copy, no conversion; the stamp check is left out (the test
    /// pattern has no buffers to share).
    #[arg(long)]
    dmabuf: bool,
}

/// One encoded picture, and the source's number for it.
struct Picture {
    data: Vec<u8>,
    keyframe: bool,
    sequence: u64,
}

/// What [`encode`] did: the coded pictures, the controls the encoder lacks, the milliseconds
/// an encode took on average, the bytes the CPU wrote per picture on its way to the encoder.
struct Encoded {
    coded: Vec<Picture>,
    lacks: Vec<&'static str>,
    ms: f64,
    written: usize,
}

/// One decoded picture: its size, the driver's key-frame flag, Y/Cb/Cr at the bar probes,
/// the stamp's picture number if it has one.
struct Decoded {
    size: (u32, u32),
    keyframe: bool,
    bars: [[u8; 3]; 8],
    stamp: Option<u32>,
}

fn main() -> ExitCode {
    onair_signal::process::init_logs("info");
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("onair-m2m-check: FAIL {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every check; whether all passed (the failures are printed).
fn run(args: &Args) -> Result<bool, String> {
    // What onaird would be told looking for H.264 here (vicodec codes FWHT only).
    match m2m::find_encoder(Coded::H264) {
        Ok((path, card)) => println!("H.264 encoder: {} ({card})", path.display()),
        Err(e) => println!("{e}"),
    }
    let (encoder_path, card) = m2m::find_encoder(Coded::Fwht)?;
    let decoder_path = find_fwht_decoder()?;
    println!(
        "encoder {} ({card}), decoder {}",
        encoder_path.display(),
        decoder_path.display()
    );
    let started = Instant::now();
    let mut camera = open_camera(args)?;
    let Encoded {
        coded,
        lacks,
        ms: encode_ms,
        written,
    } = encode(args, &encoder_path, &mut camera, args.dmabuf)?;
    let mut failures = Vec::new();
    check_encoded(args, &coded, &mut failures);
    if !args.encode_only && !args.dmabuf {
        check_stamps(args, &encoder_path, &decoder_path, &mut failures)?;
    }
    let decoded = match args.encode_only {
        true => "not decoded (--encode-only)".to_string(),
        false => {
            let raw = match args.dmabuf {
                true => camera.format().pixel,
                false => onair_hal::PixelFormat::I420,
            };
            let decoded = decode(&decoder_path, &coded, raw)?;
            check_decoded(args, &coded, &decoded, &mut failures);
            describe_decoded(&decoded, &decoder_path)
        }
    };
    let keys: Vec<usize> = (0..coded.len()).filter(|&i| coded[i].keyframe).collect();
    let bytes: usize = coded.iter().map(|c| c.data.len()).sum();
    println!(
        "onair-m2m-check: {} pictures 640x480 FWHT on {} ({card}), {}, key frames at {keys:?} \
         ({} of {}), {bytes} bytes ({} per picture), {encode_ms:.2} ms per picture encoded; \
         {decoded}; vicodec lacks: {}; {:.1} s; {}",
        coded.len(),
        encoder_path.display(),
        match args.dmabuf {
            true => format!(
                "read in the camera's buffers (DMABUF import), {written} bytes written by the CPU per picture"
            ),
            false => format!(
                "converted to I420 and copied in, {written} bytes written by the CPU per picture"
            ),
        },
        keys.len(),
        coded.len(),
        bytes / coded.len().max(1),
        lacks.join(", "),
        started.elapsed().as_secs_f64(),
        if failures.is_empty() {
            "PASS".to_string()
        } else {
            format!("FAIL: {}", failures.join("; "))
        }
    );
    Ok(failures.is_empty())
}

/// vivid at 640x480.
fn open_camera(args: &Args) -> Result<V4l2Camera, String> {
    let wanted = VideoFormatRequest {
        width: 640,
        height: 480,
        fps: 25,
        h264: false,
    };
    let camera = V4l2Camera::open(&args.camera, wanted).map_err(|e| e.to_string())?;
    println!("camera: {}; {}", camera.describe(), camera.negotiation());
    Ok(camera)
}

/// Encodes `args.pictures` of `camera`'s pictures (converted to I420 and copied, or if
/// `shared` read in the camera's buffers); the coded pictures, the controls the encoder
/// lacks, and the milliseconds an encode took on average.
fn encode(
    args: &Args,
    path: &Path,
    camera: &mut dyn VideoSource,
    shared: bool,
) -> Result<Encoded, String> {
    let format = camera.format();
    let mut frame = VideoFrame::new();
    let input = match shared {
        true => {
            let layout = camera.share()?;
            println!(
                "camera shares {} buffers: {} {}x{}, lines of {} bytes",
                layout.buffers,
                String::from_utf8_lossy(&layout.fourcc),
                layout.width,
                layout.height,
                layout.stride
            );
            frame.want_data = false;
            Input::Imported(layout)
        }
        false => Input::Copied,
    };
    let settings = M2mSettings {
        width: format.width,
        height: format.height,
        fps: format.fps,
        bitrate_kbps: 1000,
        gop: args.gop,
        coded: Coded::Fwht,
        input,
    };
    let mut encoder = M2mEncoder::open(path, settings).map_err(|e| e.to_string())?;
    let mut converted = Vec::new();
    // Bytes the CPU writes per picture on its way to the encoder: the HAL's copy out of the
    // camera's buffer, the conversion to I420, the copy into the encoder's buffer.
    let mut written = 0;
    let (mut coded, mut spent) = (Vec::new(), Duration::ZERO);
    for i in 0..args.pictures {
        if i == args.change_at {
            encoder.set_gop(args.new_gop).map_err(|e| e.to_string())?;
            encoder.set_bitrate(500).map_err(|e| e.to_string())?;
        }
        camera.read_frame(&mut frame).map_err(|e| e.to_string())?;
        let force = i == args.force_at;
        let t = Instant::now();
        let picture = match shared {
            true => {
                if !frame.data.is_empty() {
                    return Err(format!("picture {i}: copied although no bytes were wanted"));
                }
                let buffer = frame.shared.as_ref().ok_or("the camera shared no buffer")?;
                encoder.encode_shared(buffer, force)
            }
            false => {
                let i420 = convert::to_i420(
                    format.pixel,
                    format.width,
                    format.height,
                    &frame.data,
                    &mut converted,
                )
                .ok_or("the camera delivered no picture")?;
                let converted = match format.pixel {
                    onair_hal::PixelFormat::I420 => 0,
                    _ => i420.len(),
                };
                written += frame.data.len() + converted + i420.len();
                encoder.encode(i420, force, Duration::ZERO)
            }
        }
        .map_err(|e| format!("picture {i}: {e}"))?
        .ok_or(format!("picture {i}: nothing came out"))?;
        spent += t.elapsed();
        coded.push(Picture {
            data: picture.annex_b.to_vec(),
            keyframe: picture.keyframe,
            sequence: frame.sequence,
        });
    }
    let lacks = encoder.lacks();
    let t = Instant::now();
    drop(encoder);
    println!(
        "encoder drained and stopped in {} ms",
        t.elapsed().as_millis()
    );
    let ms = spent.as_secs_f64() * 1000.0 / args.pictures.max(1) as f64;
    Ok(Encoded {
        coded,
        lacks,
        ms,
        written: written / args.pictures.max(1),
    })
}

/// How many pictures were decoded, which the driver flagged as key frames, how far the bars
/// were off.
fn describe_decoded(decoded: &[Decoded], path: &Path) -> String {
    let keys: Vec<usize> = (0..decoded.len())
        .filter(|&i| decoded[i].keyframe)
        .collect();
    let want = BARS.map(rgb_to_yuv);
    let off = decoded
        .iter()
        .flat_map(|d| d.bars.iter().zip(&want))
        .flat_map(|(got, want)| got.iter().zip(want).map(|(g, w)| g.abs_diff(*w)))
        .max()
        .unwrap_or(0);
    format!(
        "{} decoded on {}, flagged key frames at {keys:?}, bars off by at most {off} (of ±{BAR_TOLERANCE})",
        decoded.len(),
        path.display()
    )
}

/// The forced picture is a key frame; key frames come at most `new_gop` apart once the GOP
/// changed (unless it became 0), and none before the forced one within the first GOP.
fn check_encoded(args: &Args, coded: &[Picture], failures: &mut Vec<String>) {
    if !coded.get(args.force_at).is_some_and(|c| c.keyframe) {
        failures.push(format!(
            "the forced picture {} is no key frame",
            args.force_at
        ));
    }
    if !coded.first().is_some_and(|c| c.keyframe) {
        failures.push("the first picture is no key frame".into());
    }
    let settled = args.change_at + args.new_gop as usize;
    let keys: Vec<usize> = (settled..coded.len())
        .filter(|&i| coded[i].keyframe)
        .collect();
    let longest = keys
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(usize::MAX);
    // A GOP of 0 is the driver's longest, which this cannot know.
    if args.new_gop > 0 && (keys.len() < 2 || longest > args.new_gop as usize) {
        failures.push(format!(
            "after the GOP became {} key frames came at {keys:?}",
            args.new_gop
        ));
    }
    let before: Vec<usize> = (1..args.force_at).filter(|&i| coded[i].keyframe).collect();
    if !before.is_empty() && args.force_at < args.gop as usize {
        failures.push(format!(
            "key frames at {before:?} before the GOP of {} ended",
            args.gop
        ));
    }
}

/// Every picture decoded, at 640x480, with vivid's bars, and the driver flags the forced one
/// as a key frame.
fn check_decoded(args: &Args, coded: &[Picture], decoded: &[Decoded], failures: &mut Vec<String>) {
    if decoded.len() != coded.len() {
        failures.push(format!(
            "{} pictures decoded of {}",
            decoded.len(),
            coded.len()
        ));
    }
    let sizes: Vec<_> = decoded
        .iter()
        .map(|d| d.size)
        .filter(|s| *s != (640, 480))
        .collect();
    if !sizes.is_empty() {
        failures.push(format!("decoded sizes {sizes:?}, want 640x480"));
    }
    if !decoded.get(args.force_at).is_some_and(|d| d.keyframe) {
        failures.push(format!(
            "the decoder did not flag picture {} V4L2_BUF_FLAG_KEYFRAME",
            args.force_at
        ));
    }
    let disagree: Vec<usize> = (0..decoded.len().min(coded.len()))
        .filter(|&i| decoded[i].keyframe != coded[i].keyframe)
        .collect();
    if !disagree.is_empty() {
        failures.push(format!(
            "the encoder and the decoder disagree on key frames at {disagree:?}"
        ));
    }
    let want = BARS.map(rgb_to_yuv);
    for (i, picture) in decoded.iter().enumerate() {
        let off = picture.bars.iter().zip(&want).any(|(got, want)| {
            got.iter()
                .zip(want)
                .any(|(g, w)| g.abs_diff(*w) > BAR_TOLERANCE)
        });
        if off {
            failures.push(format!(
                "picture {i}: bars Y/Cb/Cr {:?}, want {want:?} ±{BAR_TOLERANCE}",
                picture.bars
            ));
            break;
        }
    }
}

/// onair's stamped test pattern through the same encoder and decoder: every decoded picture's
/// stamp must name the picture that went in, in order.
fn check_stamps(
    args: &Args,
    encoder: &Path,
    decoder: &Path,
    failures: &mut Vec<String>,
) -> Result<(), String> {
    let mut pattern = TestPattern::new(640, 480, 25);
    let coded = encode(args, encoder, &mut pattern, false)?.coded;
    let decoded = decode(decoder, &coded, onair_hal::PixelFormat::I420)?;
    let sent: Vec<Option<u32>> = coded.iter().map(|c| Some(c.sequence as u32)).collect();
    let read: Vec<Option<u32>> = decoded.iter().map(|d| d.stamp).collect();
    match sent == read {
        true => println!(
            "stamps: {} pictures of the test pattern decoded with their own numbers ({:?}..={:?})",
            read.len(),
            read.first().copied().flatten(),
            read.last().copied().flatten()
        ),
        false => failures.push(format!("stamps sent {sent:?}, read {read:?}")),
    }
    Ok(())
}

/// vicodec's stateful decoder: the memory-to-memory device whose OUTPUT queue takes FWHT.
fn find_fwht_decoder() -> Result<PathBuf, String> {
    let fwht = PixelFormat::from(b"FWHT");
    (0..64)
        .map(|n| PathBuf::from(format!("/dev/video{n}")))
        .filter(|path| path.exists())
        .find(|path| {
            Device::open(path, DeviceConfig::new()).is_ok_and(|device| {
                [QueueType::VideoOutputMplane, QueueType::VideoOutput]
                    .into_iter()
                    .any(|kind| {
                        FormatIterator::new(&device, kind).any(|f| {
                            f.pixelformat == fwht && f.flags.contains(FormatFlags::COMPRESSED)
                        })
                    })
            })
        })
        .ok_or_else(|| "no FWHT decoder (vicodec's stateful decoder) among /dev/video*".into())
}

/// Decodes `coded` on `path` with v4l2r's stateful decoder to `raw` (what was encoded: vicodec
/// decodes to the family of the stream's pixel format); the decoded pictures in order.
fn decode(
    path: &Path,
    coded: &[Picture],
    raw: onair_hal::PixelFormat,
) -> Result<Vec<Decoded>, String> {
    let fourcc: &'static [u8; 4] = match raw {
        onair_hal::PixelFormat::Yuyv => b"YUYV",
        onair_hal::PixelFormat::Nv12 => b"NV12",
        _ => b"YU12",
    };
    let (sender, receiver) = mpsc::channel();
    let on_event = move |event: DecoderEvent<MmapProvider>| {
        if let DecoderEvent::FrameDecoded(buffer) = event {
            let keyframe = buffer.data.flags().contains(BufferFlags::KEYFRAME);
            let used = *buffer.data.get_first_plane().bytesused as usize;
            if used > 0
                && let Some(mapping) = buffer.get_plane_mapping(0)
            {
                let _ = sender.send((mapping.to_vec(), keyframe));
            }
        }
    };
    let (size_tx, size_rx) = mpsc::channel();
    let on_format = move |builder: FormatBuilder, visible: Rect, buffers: usize| {
        let format: Format = builder.set_pixelformat(fourcc).apply()?;
        if format.pixelformat != PixelFormat::from(fourcc) {
            eprintln!(
                "the decoder gives {} instead of {}",
                format.pixelformat,
                PixelFormat::from(fourcc)
            );
        }
        let stride = format
            .plane_fmt
            .first()
            .map_or(0, |plane| plane.bytesperline);
        let _ = size_tx.send((visible.width, visible.height, stride));
        Ok(FormatChangedReply {
            provider: MmapProvider::new(&format),
            mem_type: MemoryType::Mmap,
            num_buffers: buffers + 1,
        })
    };
    let mut decoder = Decoder::open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .set_output_format(|f| {
            let _: Format = f
                .set_pixelformat(b"FWHT")
                .set_planes_layout(vec![PlaneLayout {
                    sizeimage: 640 * 480 * 3 + 1024,
                    ..Default::default()
                }])
                .apply()?;
            Ok(())
        })
        .map_err(|e| format!("decoder OUTPUT format: {e}"))?
        .allocate_output_buffers::<Vec<MmapHandle>>(4)
        .map_err(|e| format!("decoder OUTPUT buffers: {e}"))?
        .start(|_| (), on_event, on_format)
        .map_err(|e| format!("starting the decoder: {e}"))?;
    for (i, picture) in coded.iter().enumerate() {
        let buffer = decoder
            .get_buffer()
            .map_err(|e| format!("decoder buffer {i}: {e}"))?;
        let mut mapping = buffer
            .get_plane_mapping(0)
            .ok_or("cannot map a decoder buffer")?;
        let Some(dst) = mapping.get_mut(..picture.data.len()) else {
            return Err(format!(
                "picture {i} ({} bytes) does not fit",
                picture.data.len()
            ));
        };
        dst.copy_from_slice(&picture.data);
        drop(mapping);
        buffer
            .queue(&[picture.data.len()])
            .map_err(|e| format!("queueing picture {i}: {e}"))?;
    }
    let _ = decoder.drain(true);
    let size = size_rx
        .recv_timeout(Duration::from_secs(2))
        .map_err(|_| "the decoder reported no format")?;
    let mut decoded = Vec::new();
    let mut i420 = Vec::new();
    while let Ok((data, keyframe)) = receiver.recv_timeout(Duration::from_secs(2)) {
        let (width, height, stride) = size;
        let picture = match raw {
            onair_hal::PixelFormat::I420 => (&data[..], size),
            // Tight lines (vicodec's), as the conversion takes them.
            _ => (
                convert::to_i420(raw, width, height, &data, &mut i420)
                    .filter(|_| match raw {
                        onair_hal::PixelFormat::Yuyv => stride == 2 * width,
                        _ => stride == width,
                    })
                    .ok_or(format!("cannot read a {width}x{height} {raw:?} picture with lines of {stride} bytes"))?,
                (width, height, width),
            ),
        };
        decoded.push(read_bars(picture.0, picture.1, keyframe));
        if decoded.len() == coded.len() {
            break;
        }
    }
    let _ = decoder.stop();
    Ok(decoded)
}

/// Y, Cb, Cr at the middle of each bar of a decoded YU12 picture.
fn read_bars(data: &[u8], (width, height, stride): (u32, u32, u32), keyframe: bool) -> Decoded {
    let (stride, lines) = (stride.max(width) as usize, height as usize);
    let (cstride, luma) = (stride / 2, stride * lines);
    let at = |offset: usize| data.get(offset).copied().unwrap_or(0);
    let bars = bar_probe_points(width, height).map(|(x, y)| {
        let (x, y) = (x as usize, y as usize);
        let c = (y / 2) * cstride + x / 2;
        [
            at(y * stride + x),
            at(luma + c),
            at(luma + cstride * lines / 2 + c),
        ]
    });
    let stamp = data
        .get(..luma)
        .and_then(|y| read_stamp(y, stride, width, height))
        .map(|stamp| stamp.sequence);
    Decoded {
        size: (width, height),
        keyframe,
        bars,
        stamp,
    }
}
