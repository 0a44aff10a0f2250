//! The on-air LED, the status LED and the privacy button.
//!
//! [`Indicators`] is a pure state machine with time as an input: it takes what the daemon
//! knows (viewers, whether frames flow, whether signaling works) and the button's level, and
//! says what the LEDs show and when privacy toggles. [`Poller`] is the thin edge around it: it
//! reads the button, switches the LEDs (only when they change) and flips the shared privacy
//! flag the media threads read. [`Poller::spawn`] runs it on a thread of its own every
//! [`POLL`] until the daemon stops.
//!
//! Status LED:
//!
//! | LED | meaning |
//! |---|---|
//! | steady on | all well: frames are being encoded |
//! | 1 blink every 2 s | no camera: no frame encoded for 2 s (or none yet) |
//! | 2 blinks every 2 s | no signaling (reserved: there is no signaling service yet) |
//!
//! A blink is 200 ms on; blinks of one code start 500 ms apart. When both are wrong, the
//! camera's code shows.

use std::time::{Duration, Instant};

use crate::lifecycle::Lifecycle;
use crate::media::Privacy;
use onair_hal::gpio::{Gpio, GpioPins, Led, RppalGpio};
use tracing::{info, warn};

/// How often the button is read and the LEDs updated: fast enough that no human press (at
/// least ~50 ms) goes unseen and blinks look crisp, slow enough to cost nothing.
pub const POLL: Duration = Duration::from_millis(20);
/// After the button's (debounced) level changes, changes within this time are contact
/// bounce, or a double press nobody meant, and are ignored.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// One blink code repeats with this period.
pub const BLINK_CYCLE: Duration = Duration::from_millis(2000);
/// How long the LED is lit for one blink.
pub const BLINK_ON: Duration = Duration::from_millis(200);
/// From the start of one blink to the start of the next within a code.
pub const BLINK_PERIOD: Duration = Duration::from_millis(500);

/// What the daemon knows about itself, sampled every poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Viewers whose media connection is up.
    pub viewers: usize,
    /// Frames are being captured and encoded.
    pub camera_ok: bool,
    /// The signaling service is reachable (always true: there is none yet).
    pub signaling_ok: bool,
}

/// Something wrong, shown as a blink code on the status LED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No frame encoded lately: camera missing, unplugged or stalled.
    NoCamera,
    /// The signaling service cannot be reached.
    NoSignaling,
}

impl Fault {
    /// Blinks per [`BLINK_CYCLE`].
    pub fn blinks(self) -> u32 {
        match self {
            Fault::NoCamera => 1,
            Fault::NoSignaling => 2,
        }
    }

    /// The fault to show for `health`, the most basic first; `None` when all is well.
    pub fn of(health: Health) -> Option<Fault> {
        if !health.camera_ok {
            Some(Fault::NoCamera)
        } else if !health.signaling_ok {
            Some(Fault::NoSignaling)
        } else {
            None
        }
    }
}

/// What the machine wants done after one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    /// The on-air LED is lit.
    pub on_air_led: bool,
    /// The status LED is lit.
    pub status_led: bool,
    /// The button was pressed (after debouncing): privacy flips.
    pub toggle_privacy: bool,
}

/// The LED and button logic, without any I/O.
#[derive(Debug, Default)]
pub struct Indicators {
    /// The fault on show and since when: its blink code starts from that instant, so a new
    /// code always begins with a whole first blink.
    fault: Option<(Fault, Instant)>,
    /// The button's debounced level (`true` = down).
    button_down: bool,
    /// When the debounced level last changed; `None` before the first change.
    button_changed: Option<Instant>,
    /// Since when the raw level has differed from the debounced one, if it does.
    button_pending: Option<Instant>,
}

impl Indicators {
    /// Button up, nothing on show yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One step at `now`: `button_down` is the button's raw level. `now` must not go back.
    pub fn update(&mut self, now: Instant, health: Health, button_down: bool) -> Outputs {
        let toggle_privacy = self.button(now, button_down);
        let fault = Fault::of(health);
        if self.fault.map(|(f, _)| f) != fault {
            self.fault = fault.map(|f| (f, now));
        }
        let status_led = match self.fault {
            None => true,
            Some((fault, since)) => blink_level(fault.blinks(), now.duration_since(since)),
        };
        Outputs {
            on_air_led: health.viewers > 0,
            status_led,
            toggle_privacy,
        }
    }

    /// Debounces the button: a change of level counts only once the last counted change is
    /// at least [`DEBOUNCE`] old. A change ignored for that reason is taken up by a later
    /// poll if the level stays (so a short press still ends in "up"), dated from when the
    /// level first changed. True when the button went down: a press.
    fn button(&mut self, now: Instant, down: bool) -> bool {
        if down == self.button_down {
            self.button_pending = None;
            return false;
        }
        let since = *self.button_pending.get_or_insert(now);
        if self
            .button_changed
            .is_some_and(|at| now.duration_since(at) < DEBOUNCE)
        {
            return false;
        }
        self.button_down = down;
        self.button_changed = Some(since);
        self.button_pending = None;
        down
    }
}

/// Whether the status LED is lit `elapsed` into showing a code of `blinks` blinks.
pub fn blink_level(blinks: u32, elapsed: Duration) -> bool {
    let into_cycle = elapsed.as_nanos() % BLINK_CYCLE.as_nanos();
    let period = BLINK_PERIOD.as_nanos();
    into_cycle / period < u128::from(blinks) && into_cycle % period < BLINK_ON.as_nanos()
}

/// The edge around [`Indicators`]: a [`Gpio`] and the privacy switch.
pub struct Poller {
    gpio: Box<dyn Gpio>,
    machine: Indicators,
    /// Black pictures and silence while on.
    privacy: Privacy,
    /// LED levels last written (on-air, status), so unchanged LEDs are not rewritten.
    lit: Option<(bool, bool)>,
}

impl Poller {
    /// A poller for `gpio` that switches `privacy` over on every press.
    pub fn new(gpio: Box<dyn Gpio>, privacy: Privacy) -> Self {
        Poller {
            gpio,
            machine: Indicators::new(),
            privacy,
            lit: None,
        }
    }

    /// One poll at `now`: read the button, step the machine, switch the LEDs.
    pub fn poll(&mut self, now: Instant, health: Health) -> Outputs {
        let down = self.gpio.button_down();
        let out = self.machine.update(now, health, down);
        if out.toggle_privacy {
            let on = self.privacy.toggle();
            info!("privacy button: privacy {}", if on { "on" } else { "off" });
        }
        let lit = (out.on_air_led, out.status_led);
        if self.lit.is_none_or(|(on_air, _)| on_air != lit.0) {
            self.gpio.set_led(Led::OnAir, lit.0);
        }
        if self.lit.is_none_or(|(_, status)| status != lit.1) {
            self.gpio.set_led(Led::Status, lit.1);
        }
        self.lit = Some(lit);
        out
    }

    /// Polls every [`POLL`] on a thread of its own, `sense` telling the health at each poll,
    /// until `lifecycle`'s stop (within one [`POLL`]); then the LEDs go dark.
    pub fn spawn(
        mut self,
        mut sense: impl FnMut(Instant) -> Health + Send + 'static,
        lifecycle: &Lifecycle,
    ) -> std::io::Result<()> {
        lifecycle.thread("onair-gpio", move |stop| {
            while !stop.is_stopped() {
                let now = Instant::now();
                self.poll(now, sense(now));
                std::thread::sleep(POLL);
            }
            self.gpio.set_led(Led::OnAir, false);
            self.gpio.set_led(Led::Status, false);
        })
    }
}

/// Opens the Raspberry Pi GPIO for the configured pins. `None` when no pin is configured, or,
/// with a warning, when GPIO cannot be opened: the LEDs and the button are a convenience,
/// never a reason not to broadcast.
pub fn open(config: &onair_config::Gpio) -> Option<Box<dyn Gpio>> {
    if !config.enabled() {
        return None;
    }
    let pins = GpioPins {
        on_air_led: config.on_air_led,
        status_led: config.status_led,
        privacy_button: config.privacy_button,
        active_low: config.active_low,
    };
    match RppalGpio::open(pins) {
        Ok(gpio) => {
            info!("{}", gpio.describe());
            Some(Box::new(gpio))
        }
        Err(err) => {
            warn!("{err}; running without the [gpio] LEDs and privacy button");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onair_hal::gpio::FakeGpio;

    const WELL: Health = Health {
        viewers: 0,
        camera_ok: true,
        signaling_ok: true,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The status LED sampled every 100 ms for `cycles` blink cycles, as a string of `#`
    /// (lit) and `.`, one character per 100 ms.
    fn status_trace(machine: &mut Indicators, t0: Instant, health: Health, cycles: u64) -> String {
        (0..cycles * 20)
            .map(|i| {
                let out = machine.update(t0 + ms(i * 100), health, false);
                if out.status_led { '#' } else { '.' }
            })
            .collect()
    }

    #[test]
    fn on_air_led_is_lit_while_someone_watches() {
        let mut m = Indicators::new();
        let t0 = Instant::now();
        let with = |viewers| Health { viewers, ..WELL };
        assert!(!m.update(t0, with(0), false).on_air_led);
        assert!(m.update(t0 + ms(20), with(1), false).on_air_led);
        assert!(m.update(t0 + ms(40), with(7), false).on_air_led);
        assert!(!m.update(t0 + ms(60), with(0), false).on_air_led);
    }

    #[test]
    fn status_led_is_steady_when_all_is_well() {
        let mut m = Indicators::new();
        let trace = status_trace(&mut m, Instant::now(), WELL, 2);
        assert_eq!(trace, "#".repeat(40));
    }

    #[test]
    fn no_camera_blinks_once_per_cycle() {
        let mut m = Indicators::new();
        let no_camera = Health {
            camera_ok: false,
            ..WELL
        };
        let trace = status_trace(&mut m, Instant::now(), no_camera, 2);
        let cycle = format!("##{}", ".".repeat(18));
        assert_eq!(trace, cycle.repeat(2));
    }

    #[test]
    fn no_signaling_blinks_twice_per_cycle() {
        let mut m = Indicators::new();
        let no_signaling = Health {
            signaling_ok: false,
            ..WELL
        };
        let trace = status_trace(&mut m, Instant::now(), no_signaling, 2);
        let cycle = format!("##...##{}", ".".repeat(13));
        assert_eq!(trace, cycle.repeat(2));
    }

    #[test]
    fn the_camera_code_wins_when_both_fail() {
        let both = Health {
            camera_ok: false,
            signaling_ok: false,
            ..WELL
        };
        assert_eq!(Fault::of(both), Some(Fault::NoCamera));
        assert_eq!(Fault::of(WELL), None);
    }

    #[test]
    fn a_new_fault_starts_its_code_from_the_beginning() {
        let mut m = Indicators::new();
        let t0 = Instant::now();
        let no_camera = Health {
            camera_ok: false,
            ..WELL
        };
        // Well for 1.3 s (mid-cycle if the cycle ran from t0), then the camera goes.
        assert!(m.update(t0, WELL, false).status_led);
        let t1 = t0 + ms(1300);
        let trace = status_trace(&mut m, t1, no_camera, 1);
        assert_eq!(trace, format!("##{}", ".".repeat(18)));
        // Back to well: steady at once.
        assert!(m.update(t1 + ms(2050), WELL, false).status_led);
    }

    #[test]
    fn blink_edges_are_exact() {
        assert!(blink_level(1, ms(0)));
        assert!(blink_level(1, ms(199)));
        assert!(!blink_level(1, ms(200)));
        assert!(!blink_level(1, ms(500)));
        assert!(!blink_level(1, ms(1999)));
        assert!(blink_level(1, ms(2000)));
        assert!(blink_level(2, ms(500)));
        assert!(blink_level(2, ms(699)));
        assert!(!blink_level(2, ms(700)));
        assert!(!blink_level(2, ms(1000)));
    }

    /// Presses (as toggles) for a series of `(ms, down)` raw button samples.
    fn toggles(samples: &[(u64, bool)]) -> Vec<u64> {
        let mut m = Indicators::new();
        let t0 = Instant::now();
        samples
            .iter()
            .filter(|&&(at, down)| m.update(t0 + ms(at), WELL, down).toggle_privacy)
            .map(|&(at, _)| at)
            .collect()
    }

    #[test]
    fn each_press_toggles_privacy_once() {
        // Two clean presses, one second apart.
        let samples = [
            (0, false),
            (20, true),
            (40, true),
            (100, false),
            (400, false),
            (1000, true),
            (1100, false),
        ];
        assert_eq!(toggles(&samples), [20, 1000]);
    }

    #[test]
    fn contact_bounce_is_ignored() {
        // Bounce on press and on release, all within the debounce time of the change before.
        let samples = [
            (0, true),
            (20, false),
            (40, true),
            (60, false),
            (80, true),
            // Held, then released with bounce.
            (400, true),
            (500, false),
            (520, true),
            (540, false),
        ];
        assert_eq!(toggles(&samples), [0]);
    }

    #[test]
    fn presses_within_the_debounce_time_are_ignored() {
        // A press, a quick release and a second press 200 ms after the first: the release is
        // seen late (300 ms after the press), the second press never counts as its own.
        let samples = [
            (0, true),
            (60, false),
            (200, true),
            (240, false),
            (300, false),
            (320, false),
            (700, true),
        ];
        assert_eq!(toggles(&samples), [0, 700]);
    }

    #[test]
    fn a_short_press_still_ends_released() {
        // Released 60 ms after the press: the release counts once the debounce time passed,
        // so the next press 400 ms later toggles again.
        let samples = [
            (0, true),
            (60, false),
            (80, false),
            (320, false),
            (400, true),
        ];
        assert_eq!(toggles(&samples), [0, 400]);
    }

    fn health(viewers: usize, camera_ok: bool) -> Health {
        Health {
            viewers,
            camera_ok,
            signaling_ok: true,
        }
    }

    #[test]
    fn poller_drives_the_fake_leds_and_privacy() {
        let fake = FakeGpio::new();
        let privacy = Privacy::detached();
        let mut poller = Poller::new(Box::new(fake.clone()), privacy.clone());
        let t0 = Instant::now();
        let at = |n: u64| t0 + POLL * n as u32;

        poller.poll(at(0), health(0, true));
        assert!(!fake.led(Led::OnAir));
        assert!(fake.led(Led::Status));

        poller.poll(at(1), health(1, true));
        assert!(fake.led(Led::OnAir));

        fake.press();
        poller.poll(at(2), health(1, true));
        assert!(privacy.is_on(), "a press turns privacy on");
        poller.poll(at(3), health(1, true)); // released (within the debounce time)
        assert!(privacy.is_on());
        // A second press 40 ms after the first is bounce; one 1 s later counts.
        fake.press();
        poller.poll(at(4), health(1, true));
        assert!(privacy.is_on(), "bounce is ignored");
        poller.poll(at(25), health(1, true));
        fake.press();
        poller.poll(at(50), health(1, true));
        assert!(!privacy.is_on(), "the next press turns it off");

        poller.poll(at(51), health(0, true));
        assert!(!fake.led(Led::OnAir));

        // Camera gone: the status LED blinks once per cycle (100 polls of 20 ms).
        let start = 100;
        for n in start..start + 100 {
            poller.poll(at(n), health(0, false));
        }
        // LEDs are written only when they change: on-air on, off; status on, then the
        // blink: stays on for the first blink, off after 200 ms.
        assert_eq!(fake.history(Led::OnAir), [false, true, false]);
        assert_eq!(fake.history(Led::Status), [true, false]);
        poller.poll(at(start + 100), health(0, false));
        assert_eq!(fake.history(Led::Status), [true, false, true]);
        poller.poll(at(start + 101), health(0, true));
        assert!(fake.led(Led::Status));
    }

    #[tokio::test]
    async fn poller_thread_stops_and_darkens_the_leds_at_the_stop() {
        let fake = FakeGpio::new();
        let poller = Poller::new(Box::new(fake.clone()), Privacy::detached());
        let lifecycle = Lifecycle::default();
        poller.spawn(|_| health(3, true), &lifecycle).unwrap();
        let left = lifecycle.finish(std::time::Duration::from_secs(30)).await;
        assert!(left.is_empty(), "{left:?}");
        assert!(!fake.led(Led::OnAir));
        assert!(!fake.led(Led::Status));
    }

    #[test]
    fn no_pins_means_no_gpio() {
        assert!(open(&onair_config::Gpio::default()).is_none());
    }

    #[test]
    fn gpio_that_cannot_be_opened_is_left_out() {
        if std::path::Path::new("/dev/gpiomem").exists() {
            return; // a Pi: opening may work
        }
        let config = onair_config::Gpio {
            on_air_led: Some(17),
            ..Default::default()
        };
        assert!(open(&config).is_none());
    }
}
