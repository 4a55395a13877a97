//! Help written for someone who wants to chat first, and for someone
//! learning how the network works second.

/// `/help` with no topic.
pub const OVERVIEW: &str = "\
chatting
  NAME text           send text to a contact (also @NAME text)
  ADDRESS text        send to a 40-hex-digit address you were given
  /reply text         answer the last person who wrote to you
  /add NAME ADDRESS   give an address a name (or paste their identity line)
  /contacts           your contacts, when you last heard from them, unread
  /inbox  /outbox     messages you received / sent, with their state
  /history [NAME]     one conversation, or all of them
  /cancel ID          withdraw a message that is not delivered yet
  /whoami             your address and the line to give to others
seeing the network
  /peers  /lookup ADDRESS  /held  /acks  /stats
other
  /help COMMAND       more on one command (try /help address, /help relays)
  /quit               stop (also Ctrl-D; Ctrl-C clears the line, twice quits)
A line ending in \\ continues on the next line; Tab completes commands and names.";

/// Help on one topic, or None if there is none.
pub fn topic(name: &str) -> Option<&'static str> {
    Some(match name.trim_start_matches('/') {
        "send" | "message" | "text" => "\
To send, type who it is for and then the text:
  bob see you at 8        (a name from /contacts; @bob works too)
  44751799925b964a00bae3863cc4236f9bb8d519 hello   (an address)
The message is encrypted to the recipient's key. If they are offline it is
kept by the nodes closest to their address (relays) until they come back,
for up to the message's lifetime. You see its progress under it:
  [1a2b3c4d] → bob: on 3 relays        then    delivered 14:02 (signed ack)
End a line with \\ to continue the message on the next line.",
        "add" | "address" | "whoami" | "identity" | "give" => "\
How do I give someone my address?
  Type /whoami. It prints your address and your identity line (your
  address and your public key). Send that line to the person any way you
  like; they type /add YOURNAME and paste it.
How do I add someone?
  /add bob 44751799925b964a00bae3863cc4236f9bb8d519
  /add bob 4475…d519:3b6a…da29   (their identity line: sends faster, since
                                  their key need not be looked up)
Then write to them with: bob hello. /remove bob forgets the name.",
        "remove" => "/remove NAME forgets a name (messages stay in /history under the address).",
        "contacts" => "\
/contacts lists the names you gave, each with its address, when you last
heard from them, and how many of their messages you have not opened with
/history NAME or answered yet.",
        "reply" => "\
/reply text answers whoever wrote to you last (named or not). To answer
someone else, use their name: bob text.",
        "inbox" => "/inbox shows the messages you received, newest last, with the date and time they arrived.",
        "outbox" | "state" | "states" => "\
/outbox shows the messages you sent that are not delivered yet, and the
latest delivered ones, each with its state:
  queued          waiting for the recipient's key, or for this node to join
  on N relays     N nodes near the recipient hold a copy and keep offering it
  delivered       the recipient's signed acknowledgement came back
  expired         its lifetime ran out before the recipient came online
  cancelled       you withdrew it (see /help cancel)",
        "history" => "\
/history NAME shows your conversation with NAME (or an address), oldest
first, with dates; it also marks their messages read. /history alone lists
every conversation with its last message.",
        "cancel" => "\
/cancel ID withdraws a message that is not delivered yet (ID: the hex
digits in brackets; the first 4 are enough if they are unique).
This node stops sending it at once and forgets it. Relays that already
hold a copy cannot be told to drop it (nobody but the recipient can sign
its acknowledgement), so they keep offering it until its lifetime or relay
budget ends: the recipient may still receive it.",
        "relays" | "relay" | "held" => "\
What does \"on 3 relays\" mean?
  The recipient was not reachable, so 3 nodes whose addresses are closest
  to the recipient's took a copy. They keep offering it, waiting longer
  between tries, until the recipient comes back, and pass it on if closer
  nodes appear. The recipient's signed acknowledgement makes every copy go.
/held lists the messages this node keeps for other people: recipient, age,
expiry, relay budget left, next try, and which peers hold copies too.",
        "acks" => "\
/acks lists the acknowledgements this node remembers (tombstones): the
message ids it will refuse to hold again, and until when.",
        "peers" => "\
/peers shows the routing table: the nodes this one knows, grouped by how
far their address is from yours (bucket 159 is the farthest half), with
the round-trip time and failed requests in a row.",
        "lookup" => "\
/lookup ADDRESS (or NAME) asks the network for the nodes closest to that
address and shows the path, round by round: who was asked, who answered
and how many closer nodes each one knew.",
        "stats" => "/stats shows counters: datagrams, drops by reason, held messages, and request latency percentiles.",
        "quit" | "exit" => "/quit stops the node (Ctrl-D too). Held messages are kept and resumed on the next start.",
        "help" => OVERVIEW,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_help() {
        for c in super::super::parse::COMMANDS {
            assert!(topic(c).is_some(), "{c}");
        }
        assert!(topic("/frob").is_none());
    }
}
