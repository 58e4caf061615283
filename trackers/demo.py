"""The demo corpus: sales and support call transcripts generated here, deterministically.

Each call mixes small talk and routine turns with a few recurring concepts (pricing objection,
competitor mention, cancellation threat, follow-up scheduling, ...) so a new workspace has
something realistic to search and, later, to train trackers on.
"""

from __future__ import annotations

import io
import random
import zipfile
from datetime import date, timedelta

COMPANIES = [
    "Brightline Logistics",
    "Cobalt Health",
    "Fernway Foods",
    "Harbor Dental",
    "Juniper Legal",
    "Kestrel Energy",
    "Lumen Retail",
    "Maple Insurance",
    "Northstar Freight",
    "Orchid Hotels",
    "Pinecrest Schools",
    "Quarry Media",
    "Riverbend Clinics",
    "Summit Realty",
    "Tidewater Bank",
]
COMPETITORS = ["Salesforce", "HubSpot", "Zendesk", "Freshdesk", "Pipedrive", "Intercom"]
REPS = ["Dana", "Marco", "Priya", "Tom", "Aisha", "Lena"]
CUSTOMERS = ["Chris", "Jordan", "Sam", "Alex", "Morgan", "Taylor", "Jamie", "Robin", "Casey", "Riley"]
FEATURES = [
    "reporting dashboard",
    "call recording",
    "CRM sync",
    "SSO login",
    "mobile app",
    "API access",
    "custom fields",
    "email templates",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "next week", "the 14th", "end of the month"]

CONCEPTS: dict[str, list[str]] = {
    "pricing_objection": [
        "Honestly the price is a lot higher than we budgeted for.",
        "That's way too expensive for a team our size.",
        "I can't justify {price} a seat to my CFO.",
        "We love the product but the cost is the sticking point.",
        "Is there any flexibility on price? Our budget got cut this quarter.",
        "At that price point it's hard to see the return.",
        "The per-user pricing really adds up once we add the support team.",
        "We were expecting something closer to half of that.",
        "If you can't come down on price I don't think this gets approved.",
        "The renewal quote went up twenty percent, that's a problem for us.",
    ],
    "competitor_mention": [
        "We're also looking at {competitor} right now.",
        "{competitor} offered us a much bigger discount last week.",
        "How do you compare to {competitor}?",
        "Our sister company uses {competitor} and they seem happy with it.",
        "{competitor} already has the {feature} built in.",
        "We're in a trial with {competitor} until the end of the month.",
        "Frankly {competitor} came in cheaper on the last quote.",
        "My boss keeps asking why we shouldn't just go with {competitor}.",
        "We used {competitor} before and switched away because of support.",
    ],
    "cancellation_threat": [
        "If this isn't fixed by {day} we're going to cancel.",
        "I'm seriously thinking about ending our contract.",
        "We might not renew at this point.",
        "Please tell me how to close our account.",
        "Honestly we're ready to walk away from this.",
        "This is the third outage this month, we can't keep paying for this.",
        "I want to cancel the subscription before the next billing cycle.",
        "Unless something changes we'll be moving off your platform.",
        "Our leadership asked me to start looking for a replacement.",
    ],
    "follow_up": [
        "Can we set up a follow-up call on {day}?",
        "Let's book thirty minutes {day} to go through the proposal.",
        "I'll send a calendar invite for {day} at ten.",
        "Could you schedule a demo for my team {day}?",
        "Let's reconnect {day} once I've talked to finance.",
        "I'll loop back with you {day} after our internal review.",
        "Does {day} afternoon work for a quick check-in?",
        "Send me a few times for next week and I'll grab one.",
    ],
    "technical_issue": [
        "The {feature} keeps timing out when we load it.",
        "Since the last update the {feature} doesn't work at all.",
        "Our users are getting an error every time they log in.",
        "The sync has been failing since Tuesday night.",
        "We lost a whole day of data because the export broke.",
        "The {feature} is really slow, pages take twenty seconds to load.",
        "Half of my team can't see the new records.",
        "We keep getting logged out every few minutes.",
    ],
    "discount_request": [
        "Could you do better if we sign for two years?",
        "Is there a discount for nonprofits?",
        "What if we prepay for the whole year?",
        "We'd commit today if you can knock fifteen percent off.",
        "Any chance of a startup discount?",
        "Can you include the {feature} at no extra cost?",
    ],
    "security_question": [
        "Are you SOC 2 compliant?",
        "Where is our data stored, is it in the EU?",
        "Our security team will need to review your data processing agreement.",
        "Do you support single sign-on with Okta?",
        "Is customer data encrypted at rest?",
        "We need to know how long you keep call recordings.",
    ],
    "onboarding_training": [
        "Can someone train our new hires on the {feature}?",
        "We need help setting up the {feature} for the sales team.",
        "Is there documentation for getting started?",
        "Our admins would like an onboarding session.",
        "Who should we contact to migrate our old data?",
    ],
}

SMALL_TALK = [
    "Hi {customer}, thanks for making time today.",
    "Hey, good to talk to you again.",
    "How was your weekend?",
    "Pretty good, busy as always.",
    "Can you hear me okay?",
    "Yes, you're coming through fine.",
    "Sorry, I'm just getting out of another meeting.",
    "No worries at all.",
    "Great, let's get started.",
    "Thanks, appreciate it.",
    "Sounds good.",
    "Makes sense.",
    "Got it, thank you.",
    "Let me pull that up real quick.",
    "Okay, one second.",
    "Thanks for your patience.",
    "Anything else before we wrap up?",
    "No, I think that covers it.",
    "Have a great rest of your day.",
    "You too, bye.",
]
REP_LINES = [
    "What does your current process look like for the {feature}?",
    "How many of your managers log in each week?",
    "I can get you a sandbox with the {feature} turned on.",
    "Let me share my screen and show you the {feature}.",
    "Who else should be involved on your side?",
    "What would success look like for you this quarter?",
    "We shipped a fix for the {feature} last Thursday.",
    "Our support team is available around the clock.",
    "Just to recap, you're running about {seats} seats today.",
    "I can walk you through the {feature} if that helps.",
    "Let me check with my manager and get back to you.",
    "I'll send over a summary of everything we discussed.",
    "A lot of customers your size start with the standard plan.",
    "Totally understand, that's a fair question.",
    "I've opened a ticket with our engineering team.",
    "Our new release improves the {feature} quite a bit.",
    "I'll make a note of that in your account.",
]
CUSTOMER_LINES = [
    "Our reps mostly work from the {feature}.",
    "We onboarded {seats} new people last month.",
    "The {feature} saves my team a couple of hours a week.",
    "I'd like to see how the {feature} handles our volume.",
    "Our finance team signs off on anything over ten thousand.",
    "We run everything through the {feature} at the moment.",
    "Most of our customers are in Europe.",
    "We have a board meeting at the end of the month.",
    "We have about {seats} people using it every day.",
    "The {feature} is the part my team uses the most.",
    "Overall the team likes it.",
    "I need to check with my director first.",
    "We're growing quickly this year.",
    "Mostly we use it for weekly reporting.",
    "Our quarter ends in a few weeks, so timing matters.",
]
SCENARIOS = {
    "discovery call": [
        "competitor_mention",
        "pricing_objection",
        "follow_up",
        "security_question",
        "discount_request",
    ],
    "renewal call": [
        "pricing_objection",
        "discount_request",
        "competitor_mention",
        "cancellation_threat",
        "follow_up",
    ],
    "support call": ["technical_issue", "cancellation_threat", "follow_up", "onboarding_training"],
    "onboarding call": ["onboarding_training", "technical_issue", "follow_up", "security_question"],
    "escalation call": ["technical_issue", "cancellation_threat", "competitor_mention", "follow_up"],
}


LEAD_INS = [""] * 9 + ["Honestly, ", "Look, ", "So ", "Well, ", "Yeah, ", "Okay, ", "Right, "]
TAILS = [""] * 12 + [" Does that make sense?", " That's the main thing.", " Just so you know."]


def _fill(template: str, rng: random.Random, customer: str, vary: bool = True, tail: bool = False) -> str:
    text = template.format(
        competitor=rng.choice(COMPETITORS),
        feature=rng.choice(FEATURES),
        day=rng.choice(DAYS),
        price=f"${rng.choice([49, 59, 79, 99, 129])}",
        seats=rng.choice([12, 25, 40, 60, 150, 300]),
        customer=customer,
    )
    if not vary:
        return text
    lead = rng.choice(LEAD_INS)
    if lead and not text.startswith(("I ", "I'", *COMPETITORS)):
        text = text[0].lower() + text[1:]
    return lead + text + (rng.choice(TAILS) if tail else "")


def generate_calls(n: int = 150, seed: int = 7) -> list[tuple[str, str]]:
    """``n`` calls as (file name, transcript text) with ``[mm:ss] Speaker: text`` lines."""
    rng = random.Random(seed)
    start = date(2026, 1, 5)
    calls = []
    for i in range(n):
        scenario = rng.choice(list(SCENARIOS))
        company = rng.choice(COMPANIES)
        rep, customer = rng.choice(REPS), rng.choice(CUSTOMERS)
        concepts = rng.sample(SCENARIOS[scenario], k=rng.randint(1, 3))
        turns: list[tuple[str, str]] = [
            (rep, _fill(SMALL_TALK[0], rng, customer, vary=False)),
            (customer, rng.choice(SMALL_TALK[1:4])),
        ]
        body: list[tuple[str, str]] = []
        for _ in range(rng.randint(3, 6)):
            body.append((rep, _fill(rng.choice(REP_LINES), rng, customer)))
            line = rng.choice(CUSTOMER_LINES + SMALL_TALK[5:14])
            body.append((customer, _fill(line, rng, customer, vary=line in CUSTOMER_LINES, tail=True)))
        for concept in concepts:
            speaker = rep if concept == "follow_up" and rng.random() < 0.5 else customer
            pos = rng.randint(0, len(body))
            body.insert(pos, (speaker, _fill(rng.choice(CONCEPTS[concept]), rng, customer, tail=True)))
            reply = rng.choice(REP_LINES) if speaker == customer else rng.choice(CUSTOMER_LINES)
            body.insert(pos + 1, (rep if speaker == customer else customer, _fill(reply, rng, customer)))
        turns += body + [
            (rep, SMALL_TALK[16]),
            (customer, SMALL_TALK[17]),
            (rep, SMALL_TALK[18]),
            (customer, SMALL_TALK[19]),
        ]
        clock, lines = 0, []
        for speaker, text in turns:
            lines.append(f"[{clock // 60:02d}:{clock % 60:02d}] {speaker}: {text}")
            clock += rng.randint(4, 25)
        day = start + timedelta(days=i // 3)
        name = f"{day.isoformat()}_{company.lower().replace(' ', '-')}_{scenario.replace(' ', '-')}_{i + 1:03d}.txt"
        calls.append((name, "\n".join(lines) + "\n"))
    return calls


def demo_zip(n: int = 150, seed: int = 7) -> bytes:
    """The demo corpus as a zip of transcripts, ready for the ordinary import path."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in generate_calls(n, seed):
            zf.writestr(f"calls/{name}", text)
    return buf.getvalue()
