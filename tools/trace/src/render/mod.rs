//! Every form a run's model is shown in. Each renderer reads the model (or one of its parts),
//! never the records: text tables ([`text`], on [`table`]), CSV ([`csv`]), JSON ([`json`]), the
//! HTML report page ([`html`]), the Perfetto export ([`perfetto`]), the live line ([`live`]) and
//! the outcome of a run ([`outcome`]).

pub mod chart;
pub mod csv;
pub mod html;
pub mod json;
pub mod live;
pub mod outcome;
pub mod perfetto;
pub mod rows;
pub mod table;
pub mod text;
