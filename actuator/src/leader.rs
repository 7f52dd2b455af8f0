//! Who may act on brokers and run the periodic work: the replica that holds the Lease.
//!
//! [`Leadership`] is the read side every part of the actuator consults. Without leader election
//! (a single replica) it is [`Leadership::always`]; with it, the election loop owns the sending
//! half and flips it.

use tokio::sync::watch;

/// A view of this replica's leadership. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
}

impl Leadership {
    /// A replica that leads for as long as it runs (leader election off).
    pub fn always() -> Self {
        let (_tx, rx) = watch::channel(true);
        Self { rx }
    }

    /// Leadership as the election loop reports it through `rx`.
    pub fn from_receiver(rx: watch::Receiver<bool>) -> Self {
        Self { rx }
    }

    /// Whether this replica leads right now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// A receiver to wait on changes (`changed()`), e.g. to reconcile on becoming leader.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }
}
