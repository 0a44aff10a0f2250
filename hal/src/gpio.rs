//! Indicator LEDs and a push button on GPIO pins.
//!
//! The daemon sees GPIO as a [`Gpio`]: two LEDs it switches and a button it polls. Decisions
//! (what the LEDs show, debouncing, what a press means) belong to the caller; a backend only
//! moves levels, so the whole logic is testable with [`FakeGpio`].
//!
//! - [`RppalGpio`]: a Raspberry Pi's header through the `rppal` crate (`/dev/gpiomem`). It
//!   compiles on every Linux target and fails to open, with a clear message, on machines that
//!   are not a Pi or where the user lacks GPIO access.
//! - [`FakeGpio`]: records LED levels and lets a test press the button.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::HalError;

/// Which LED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Led {
    /// Lit while someone watches.
    OnAir,
    /// Health: steady or blinking.
    Status,
}

/// Which BCM pins to use; `None` leaves a part out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpioPins {
    /// Pin of the on-air LED.
    pub on_air_led: Option<u8>,
    /// Pin of the status LED.
    pub status_led: Option<u8>,
    /// Pin of the privacy button, wired to ground; the internal pull-up is enabled.
    pub privacy_button: Option<u8>,
    /// LEDs light when their pin is low (wired from 3.3 V to the pin).
    pub active_low: bool,
}

/// LEDs and a button. Switching and reading are infallible once the pins are open (they are
/// memory-mapped register writes), so the methods return no errors.
pub trait Gpio: Send {
    /// Human-readable description for logs ("GPIO on Raspberry Pi 4 Model B: ...").
    fn describe(&self) -> String;

    /// Lights (`on`) or darkens an LED. An LED without a pin is ignored.
    fn set_led(&mut self, led: Led, on: bool);

    /// Whether the button is held down right now. The caller polls it and finds presses
    /// (and filters contact bounce) itself. `false` when no button is configured.
    fn button_down(&mut self) -> bool;
}

/// GPIO of a Raspberry Pi through `rppal`.
pub struct RppalGpio {
    description: String,
    on_air: Option<rppal::gpio::OutputPin>,
    status: Option<rppal::gpio::OutputPin>,
    button: Option<rppal::gpio::InputPin>,
    active_low: bool,
}

impl std::fmt::Debug for RppalGpio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RppalGpio")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl RppalGpio {
    /// Opens the GPIO peripheral and claims the configured pins: LEDs as outputs, initially
    /// dark; the button as an input with pull-up.
    ///
    /// Fails on a machine that is not a Raspberry Pi (`rppal` cannot identify the SoC), when
    /// `/dev/gpiomem` is not accessible (the user is not in the `gpio` group), or when a pin
    /// does not exist or is taken.
    pub fn open(pins: GpioPins) -> Result<Self, HalError> {
        let gpio = rppal::gpio::Gpio::new().map_err(|err| HalError::Open {
            device: "GPIO".to_owned(),
            reason: match err {
                rppal::gpio::Error::UnknownModel => {
                    "not a Raspberry Pi (the SoC is not one rppal knows)".to_owned()
                }
                other => other.to_string(),
            },
        })?;
        let claim = |pin: u8, role: &str| {
            gpio.get(pin).map_err(|err| HalError::Open {
                device: format!("GPIO{pin} ({role})"),
                reason: err.to_string(),
            })
        };
        let dark = |pin: rppal::gpio::Pin| {
            if pins.active_low {
                pin.into_output_high()
            } else {
                pin.into_output_low()
            }
        };
        let on_air = pins
            .on_air_led
            .map(|pin| claim(pin, "gpio.on_air_led").map(dark))
            .transpose()?;
        let status = pins
            .status_led
            .map(|pin| claim(pin, "gpio.status_led").map(dark))
            .transpose()?;
        let button = pins
            .privacy_button
            .map(|pin| claim(pin, "gpio.privacy_button").map(|p| p.into_input_pullup()))
            .transpose()?;
        let model = rppal::system::DeviceInfo::new().map_or_else(
            |_| "Raspberry Pi".to_owned(),
            |info| info.model().to_string(),
        );
        Ok(RppalGpio {
            description: format!("GPIO on {model}: {}", describe_pins(&pins)),
            on_air,
            status,
            button,
            active_low: pins.active_low,
        })
    }
}

/// "on-air LED GPIO17, status LED GPIO27, privacy button GPIO22 (LEDs active low)".
fn describe_pins(pins: &GpioPins) -> String {
    let parts: Vec<String> = [
        ("on-air LED", pins.on_air_led),
        ("status LED", pins.status_led),
        ("privacy button", pins.privacy_button),
    ]
    .into_iter()
    .filter_map(|(what, pin)| pin.map(|pin| format!("{what} GPIO{pin}")))
    .collect();
    let mut text = if parts.is_empty() {
        "no pins".to_owned()
    } else {
        parts.join(", ")
    };
    if pins.active_low {
        text.push_str(" (LEDs active low)");
    }
    text
}

impl Gpio for RppalGpio {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn set_led(&mut self, led: Led, on: bool) {
        let pin = match led {
            Led::OnAir => self.on_air.as_mut(),
            Led::Status => self.status.as_mut(),
        };
        if let Some(pin) = pin {
            if on != self.active_low {
                pin.set_high();
            } else {
                pin.set_low();
            }
        }
    }

    fn button_down(&mut self) -> bool {
        // Pull-up: the pin reads low while the button connects it to ground.
        self.button.as_ref().is_some_and(|pin| pin.is_low())
    }
}

/// A [`Gpio`] for tests. Clones share their state: hand one to the code under test and keep
/// another to look at the LEDs and press the button.
#[derive(Debug, Clone, Default)]
pub struct FakeGpio {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    on_air: bool,
    status: bool,
    /// Every level written to the status LED, in order, to check blink sequences.
    status_history: Vec<bool>,
    /// Every level written to the on-air LED, in order.
    on_air_history: Vec<bool>,
    /// Held down by [`FakeGpio::hold`].
    held: bool,
    /// Presses queued by [`FakeGpio::press`], each seen as down for one poll, then up.
    presses: u32,
    /// Whether the previous poll reported a queued press (the next poll reports it up).
    reporting_press: bool,
}

impl FakeGpio {
    /// All LEDs dark, button up.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an LED is lit.
    pub fn led(&self, led: Led) -> bool {
        let state = self.state();
        match led {
            Led::OnAir => state.on_air,
            Led::Status => state.status,
        }
    }

    /// Every level written to an LED so far, in order (repeats included).
    pub fn history(&self, led: Led) -> Vec<bool> {
        let state = self.state();
        match led {
            Led::OnAir => state.on_air_history.clone(),
            Led::Status => state.status_history.clone(),
        }
    }

    /// A short press: the next poll sees the button down, the one after sees it up.
    /// Several presses queue up, each separated by an "up" poll.
    pub fn press(&self) {
        self.state().presses += 1;
    }

    /// Holds the button down (`true`) or lets it go, until called again.
    pub fn hold(&self, down: bool) {
        self.state().held = down;
    }
}

impl Gpio for FakeGpio {
    fn describe(&self) -> String {
        "fake GPIO".to_owned()
    }

    fn set_led(&mut self, led: Led, on: bool) {
        let mut state = self.state();
        match led {
            Led::OnAir => {
                state.on_air = on;
                state.on_air_history.push(on);
            }
            Led::Status => {
                state.status = on;
                state.status_history.push(on);
            }
        }
    }

    fn button_down(&mut self) -> bool {
        let mut state = self.state();
        if state.reporting_press {
            state.reporting_press = false;
            return state.held;
        }
        if state.presses > 0 {
            state.presses -= 1;
            state.reporting_press = true;
            return true;
        }
        state.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_records_leds_and_shares_state_between_clones() {
        let fake = FakeGpio::new();
        let mut gpio: Box<dyn Gpio> = Box::new(fake.clone());
        gpio.set_led(Led::OnAir, true);
        gpio.set_led(Led::Status, true);
        gpio.set_led(Led::Status, false);
        assert!(fake.led(Led::OnAir));
        assert!(!fake.led(Led::Status));
        assert_eq!(fake.history(Led::Status), [true, false]);
        assert_eq!(fake.history(Led::OnAir), [true]);
    }

    #[test]
    fn fake_press_is_down_for_one_poll_and_presses_queue() {
        let fake = FakeGpio::new();
        let mut gpio = fake.clone();
        assert!(!gpio.button_down());
        fake.press();
        fake.press();
        let polls: Vec<bool> = (0..5).map(|_| gpio.button_down()).collect();
        assert_eq!(polls, [true, false, true, false, false]);
        fake.hold(true);
        assert!(gpio.button_down() && gpio.button_down());
        fake.hold(false);
        assert!(!gpio.button_down());
    }

    #[test]
    fn pins_are_described_for_logs() {
        let pins = GpioPins {
            on_air_led: Some(17),
            status_led: None,
            privacy_button: Some(22),
            active_low: true,
        };
        assert_eq!(
            describe_pins(&pins),
            "on-air LED GPIO17, privacy button GPIO22 (LEDs active low)"
        );
        assert_eq!(describe_pins(&GpioPins::default()), "no pins");
    }

    #[test]
    fn rppal_fails_with_a_clear_message_off_a_pi() {
        // The build and test machines are not Raspberry Pis. On a Pi with access this opens.
        if std::path::Path::new("/dev/gpiomem").exists() {
            return;
        }
        let err = RppalGpio::open(GpioPins {
            on_air_led: Some(17),
            ..GpioPins::default()
        })
        .unwrap_err();
        assert_eq!(err.device(), "GPIO");
        assert!(err.to_string().starts_with("GPIO: cannot open: "), "{err}");
    }
}
